"""Build Gravity events from one chunk of warehouse rows, giving each bad row a named reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from airflow_provider_gravity.conversions import values as cells
from airflow_provider_gravity.conversions.columns import CUSTOM_PREFIX
from airflow_provider_gravity.conversions.event_times import event_time_seconds
from airflow_provider_gravity.conversions.pii import PiiCache, hash_user_fields

PIXEL_ID_FIELDS = ("click_id", "visitor_id", "session_id", "client_user_agent")
HASHED_USER_FIELDS = ("em", "ph", "fn", "ln", "external_id")
MAX_KEY_LENGTH = 255  # event_name and event_id; also the delivery log's key columns


@dataclass(frozen=True)
class EventSettings:
    """
    How rows become events; the operator's arguments.

    :param event_name: used where the row has no ``event_name``.
    :param action_source: used where the row has no ``action_source``; omitted when neither is set.
    :param event_source_url: used where the row has no ``event_source_url``.
    :param timezone: zone of naive ``event_time`` values.
    :param default_region: phone region where the row has no ``country``.
    :param phone_with_plus: hash phones as ``+E.164`` rather than E.164 digits.
    :param require_match_key: refuse rows without em, ph, external_id, click_id or fn+ln (``no_match_keys``).
    :param max_event_age_seconds: refuse older events (``event_too_old``); ``None`` for no limit.
    :param future_tolerance_seconds: clock skew allowed before an event counts as in the future.
    :param phone_backend: ``phonenumbers`` (reference) or ``rphonenumbers``.
    """

    event_name: str | None = None
    action_source: str | None = None
    event_source_url: str | None = None
    timezone: str = "UTC"
    default_region: str = "US"
    phone_with_plus: bool = False
    require_match_key: bool = False
    max_event_age_seconds: float | None = None
    future_tolerance_seconds: float = 300.0
    phone_backend: str = "phonenumbers"


@dataclass
class BuiltChunk:
    """
    The events of one chunk, aligned with its rows.

    :param events: the event dict of each row, ``None`` for an invalid row.
    :param reasons: the ``invalid`` reason of each row, ``None`` for a valid one.
    :param event_names: each row's event name (or ``None``), for keys of invalid rows.
    :param event_ids: each row's event id (or ``None``).
    :param field_drops: counts of values dropped from otherwise valid events (``invalid_email``, ...).
    """

    events: list[dict | None]
    reasons: list[str | None]
    event_names: list[str | None]
    event_ids: list[str | None]
    field_drops: Counter = field(default_factory=Counter)


def build_events(
    frame: pd.DataFrame, settings: EventSettings, now: float, cache: PiiCache | None = None
) -> BuiltChunk:
    """
    Validate a chunk, hash its PII and build one event per valid row.

    :param frame: rows whose column names already follow the column contract (lower-case).
    :param settings: the operator's choices.
    :param now: the run's reference time, Unix seconds.
    :param cache: normalized values of earlier chunks of the run, so repeat customers cost a lookup.
    """
    rows = len(frame)
    column = _ColumnReader(frame)
    event_ids = [cells.clean_text(v) for v in column.values("event_id")]
    event_names = column.texts("event_name", settings.event_name)
    action_sources = column.texts("action_source", settings.action_source)
    source_urls = column.texts("event_source_url", settings.event_source_url)
    seconds, time_missing = event_time_seconds(frame["event_time"], settings.timezone)
    hashed = hash_user_fields(
        frame,
        default_region=settings.default_region,
        phone_with_plus=settings.phone_with_plus,
        phone_backend=settings.phone_backend,
        cache=cache,
    )
    user_fields = {name: hashed.fields[name] for name in HASHED_USER_FIELDS if name in hashed.fields}
    pixel_ids = {name: column.texts(name, None) for name in PIXEL_ID_FIELDS if name in frame.columns}
    pixel_user_data = column.values("user_data")
    client_contexts = column.values("client_context")
    values = column.values("value")
    currencies = column.values("currency")
    order_ids = column.values("order_id")
    contents = column.values("contents")
    custom_keys = [c for c in frame.columns if c.startswith(CUSTOM_PREFIX)]
    custom_columns = {c[len(CUSTOM_PREFIX) :]: frame[c].tolist() for c in custom_keys}

    oldest = None if settings.max_event_age_seconds is None else now - settings.max_event_age_seconds
    latest = now + settings.future_tolerance_seconds
    events: list[dict | None] = [None] * rows
    reasons: list[str | None] = [None] * rows
    for i in range(rows):
        reason = _identity_reason(event_ids[i], event_names[i], seconds[i], time_missing[i], oldest, latest)
        if reason is not None:
            reasons[i] = reason
            continue
        try:
            user_data = _user_data(i, user_fields, pixel_ids, pixel_user_data)
            if settings.require_match_key and not _has_match_key(user_data):
                raise cells.BadValue("no_match_keys")
            event: dict[str, Any] = {
                "event_name": event_names[i],
                "event_time": int(seconds[i]),
                "event_id": event_ids[i],
            }
            if action_sources[i] is not None:
                event["action_source"] = action_sources[i]
            if source_urls[i] is not None:
                event["event_source_url"] = source_urls[i]
            if user_data:
                event["user_data"] = user_data
            context = cells.json_object(client_contexts[i], "bad_client_context")
            if context is not None:
                event["client_context"] = context
            custom_data = _custom_data(i, values, currencies, order_ids, contents, custom_columns)
            if custom_data:
                event["custom_data"] = custom_data
        except cells.BadValue as bad:
            reasons[i] = str(bad)
            continue
        events[i] = event
    return BuiltChunk(events, reasons, event_names, event_ids, Counter(hashed.drops))


class _ColumnReader:
    """Column values as plain lists, with a constant stand-in for absent columns."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.rows = len(frame)

    def values(self, name: str) -> list:
        if name not in self.frame.columns:
            return [None] * self.rows
        return self.frame[name].tolist()

    def texts(self, name: str, default: str | None) -> list[str | None]:
        if name not in self.frame.columns:
            return [default] * self.rows
        texts = [cells.clean_text(v) for v in self.frame[name].tolist()]
        if default is None:
            return texts
        return [default if t is None else t for t in texts]


def _identity_reason(
    event_id: str | None,
    event_name: str | None,
    seconds: float,
    time_missing: bool,
    oldest: float | None,
    latest: float,
) -> str | None:
    if event_id is None:
        return "missing_event_id"
    if len(event_id) > MAX_KEY_LENGTH:
        return "event_id_too_long"
    if event_name is None:
        return "missing_event_name"
    if len(event_name) > MAX_KEY_LENGTH:
        return "event_name_too_long"
    if time_missing:
        return "missing_event_time"
    if np.isnan(seconds):
        return "bad_event_time"
    if seconds > latest:
        return "event_time_in_future"
    if oldest is not None and seconds < oldest:
        return "event_too_old"
    return None


def _user_data(i: int, user_fields: dict, pixel_ids: dict, pixel_user_data: list) -> dict:
    user_data = cells.json_object(pixel_user_data[i], "bad_user_data") or {}
    for name, column in pixel_ids.items():
        if column[i] is not None:
            user_data[name] = column[i]
    for name, column in user_fields.items():
        if column[i] is not None:
            user_data[name] = column[i]
    return user_data


def _has_match_key(user_data: dict) -> bool:
    if any(user_data.get(key) for key in ("em", "ph", "external_id", "click_id")):
        return True
    return bool(user_data.get("fn") and user_data.get("ln"))


def _custom_data(
    i: int, values: list, currencies: list, order_ids: list, contents: list, custom_columns: dict
) -> dict:
    custom: dict[str, Any] = {}
    for key, column in custom_columns.items():
        cell = column[i]
        if not cells.is_missing(cell):
            custom[key] = cells.json_safe(cell, "bad_custom_data")
    value = cells.money(values[i])
    if value is not None:
        custom["value"] = value
    currency = cells.currency_code(currencies[i])
    if currency is not None:
        custom["currency"] = currency
    order_id = cells.clean_text(order_ids[i])
    if order_id is not None:
        custom["order_id"] = order_id
    items = cells.contents(contents[i])
    if items is not None:
        custom["contents"] = items
    return custom
