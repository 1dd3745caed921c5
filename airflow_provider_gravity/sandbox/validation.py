"""
Per-event validation and PII hashing for the sandbox, written from the contract alone.

Validation is hand-written type checks on the dicts produced by ``json.loads`` (no schema
library, no model per event) because the sandbox must validate well over 100,000 events per
second on one core. Error messages name the offending field but never echo its value, so a
plaintext email or phone can never travel back in a response or into a log line.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from typing import cast

#: Largest ``event_time`` accepted as seconds; anything above looks like milliseconds
#: (10**11 seconds is the year 5138, 10**11 milliseconds is March 1973).
MAX_PLAUSIBLE_SECONDS = 10**11

EVENT_KEYS = frozenset(
    {
        "event_name",
        "event_time",
        "event_id",
        "action_source",
        "event_source_url",
        "user_data",
        "client_context",
        "custom_data",
    }
)
_PIXEL_STRING_KEYS = frozenset({"click_id", "visitor_id", "session_id", "client_user_agent", "grclid"})


_is_lower_sha256_hex = re.compile("[0-9a-f]{64}").fullmatch
_is_sha256_hex = re.compile("[0-9a-fA-F]{64}").fullmatch
_MISSING = object()
_EMPTY: dict = {}
# How each user_data key is checked: a pixel id string, a hashed PII array or string, or ids.
_PIXEL, _PII_LIST, _PII_STRING, _ID_LIST = range(4)
_USER_DATA_KINDS = {"em": _PII_LIST, "ph": _PII_LIST, "fn": _PII_STRING, "ln": _PII_STRING}
_USER_DATA_KINDS.update({"external_id": _ID_LIST}, **dict.fromkeys(_PIXEL_STRING_KEYS, _PIXEL))


def _normalize_email(value: str) -> str:
    return value.strip().lower()


def _normalize_phone(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def _normalize_name(value: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFC", value).lower() if ch.isalpha())


_NORMALIZERS = {"em": _normalize_email, "ph": _normalize_phone, "fn": _normalize_name, "ln": _normalize_name}


def stored_pii(key: str, value: str) -> tuple[str, bool]:
    """
    Return ``(value to store, was_plaintext)`` for one ``em``/``ph``/``fn``/``ln`` value.

    A 64-hex-digit value is taken as a SHA-256 digest and lowercased; anything else is
    plaintext, normalized and hashed so that it is never kept in clear.
    """
    if _is_lower_sha256_hex(value):
        return value, False
    if _is_sha256_hex(value):
        return value.lower(), False
    return hashlib.sha256(_NORMALIZERS[key](value).encode("utf-8")).hexdigest(), True


def _is_number(value: object) -> bool:
    kind = type(value)
    return kind is int or (kind is float and math.isfinite(cast(float, value)))


def _is_string_array(values: object) -> bool:
    if type(values) is not list or not values:
        return False
    for value in values:
        if type(value) is not str or not value.strip():
            return False
    return True


def _check_user_data(user_data: object) -> tuple[str | None, int]:
    """
    Validate ``user_data`` and hash its plaintext PII in place.

    :return: ``(first error or None, number of plaintext PII values seen)``. Plaintext is
        counted and hashed even when the event is rejected, so it is never kept in clear.
    """
    if type(user_data) is not dict:
        return "user_data must be an object", 0
    error = None
    plaintext = 0
    for key, value in user_data.items():
        kind = _USER_DATA_KINDS.get(key)
        if kind == _PII_LIST:
            if error is None and not _is_string_array(value):
                error = f"user_data.{key} must be a non-empty array of non-empty strings"
            if type(value) is list:
                for index, item in enumerate(value):
                    if type(item) is str and not _is_lower_sha256_hex(item):
                        value[index], was_plaintext = stored_pii(key, item)
                        plaintext += was_plaintext
            elif type(value) is str:  # wrong shape, but it may be plaintext: never keep it
                user_data[key], was_plaintext = stored_pii(key, value)
                plaintext += was_plaintext
        elif kind == _PII_STRING or kind == _PIXEL:
            if type(value) is not str or not value.strip():
                error = error or f"user_data.{key} must be a non-empty string"
            elif kind == _PII_STRING and not _is_lower_sha256_hex(value):
                user_data[key], was_plaintext = stored_pii(key, value)
                plaintext += was_plaintext
        elif kind == _ID_LIST:
            if error is None and not _is_string_array(value):
                error = f"user_data.{key} must be a non-empty array of non-empty strings"
        else:
            error = error or f"user_data has unknown key {key[:40]!r}"
    return error, plaintext


def _check_contents(contents: object) -> str | None:
    if type(contents) is not list:
        return "custom_data.contents must be an array of objects"
    for item in contents:
        if type(item) is not dict:
            return "custom_data.contents must be an array of objects"
        item_id = item.get("id")
        if type(item_id) is not str or not item_id:
            return "custom_data.contents[].id must be a non-empty string"
        if "quantity" in item:
            quantity = item["quantity"]
            if type(quantity) is not int or quantity < 0:
                return "custom_data.contents[].quantity must be an integer >= 0"
        if "item_price" in item:
            price = item["item_price"]
            if not _is_number(price) or price < 0:
                return "custom_data.contents[].item_price must be a finite number >= 0"
    return None


def _check_custom_data(custom_data: object) -> str | None:
    if type(custom_data) is not dict:
        return "custom_data must be an object"
    if "value" in custom_data:
        value = custom_data["value"]
        if not _is_number(value) or value < 0:
            return "custom_data.value must be a finite number >= 0"
    if "currency" in custom_data:
        currency = custom_data["currency"]
        if type(currency) is not str or not (
            len(currency) == 3 and currency.isascii() and currency.isalpha() and currency.isupper()
        ):
            return "custom_data.currency must be an ISO 4217 code of 3 uppercase letters"
    if "order_id" in custom_data and type(custom_data["order_id"]) is not str:
        return "custom_data.order_id must be a string"
    if "contents" in custom_data:
        return _check_contents(custom_data["contents"])
    return None


def _check_event_time(event_time: object, now: float, oldest_allowed: float | None, max_future: float) -> str | None:
    if type(event_time) is not int:
        return "event_time must be Unix seconds (an integer)"
    if event_time >= MAX_PLAUSIBLE_SECONDS:
        return "event_time must be Unix seconds, not milliseconds"
    if event_time <= 0:
        return "event_time must be a positive Unix timestamp in seconds"
    if event_time > now + max_future:
        return f"event_time is more than {int(max_future)} seconds in the future"
    if oldest_allowed is not None and event_time < oldest_allowed:
        return "event_time is older than the accepted event age"
    return None


def validate_event(
    event: object, now: float, oldest_allowed: float | None = None, max_future_seconds: float = 300
) -> tuple[str | None, int]:
    """
    Validate one event of a batch, hashing its plaintext PII in place.

    :param event: one element of the request's ``data`` array, as parsed from JSON.
    :param now: the sandbox clock, in Unix seconds.
    :param oldest_allowed: the oldest accepted ``event_time``, or None for no age limit.
    :param max_future_seconds: how far ahead of ``now`` an ``event_time`` may be.
    :return: ``(error message or None, number of plaintext PII values seen)``.
    """
    if type(event) is not dict:
        return "event must be a JSON object", 0
    user_data = event.get("user_data", _MISSING)
    error, plaintext = (None, 0) if user_data is _MISSING else _check_user_data(user_data)
    if not EVENT_KEYS.issuperset(event):
        unknown = next(key for key in event if key not in EVENT_KEYS)
        return f"unknown event key {unknown[:40]!r}", plaintext
    event_name = event.get("event_name")
    if type(event_name) is not str or not event_name.strip():
        return "event_name must be a non-empty string", plaintext
    event_id = event.get("event_id")
    if type(event_id) is not str or not event_id:
        return "event_id must be a non-empty string", plaintext
    if event_id.strip() != event_id:
        return "event_id must not have surrounding whitespace", plaintext
    time_error = _check_event_time(event.get("event_time"), now, oldest_allowed, max_future_seconds)
    if time_error:
        return time_error, plaintext
    action_source = event.get("action_source", "")
    if type(action_source) is not str:
        return "action_source must be a string", plaintext
    source_url = event.get("event_source_url", "")
    if type(source_url) is not str:
        return "event_source_url must be a string", plaintext
    if error:
        return error, plaintext
    if type(event.get("client_context", _EMPTY)) is not dict:
        return "client_context must be an object", plaintext
    custom_data = event.get("custom_data", _MISSING)
    if custom_data is not _MISSING:
        return _check_custom_data(custom_data), plaintext
    return None, plaintext
