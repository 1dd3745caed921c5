"""Turn warehouse cell values (numpy scalars, Decimals, JSON text, NaN) into JSON-safe Python values."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from typing import Any

import numpy as np

MAX_CONTENTS_ITEMS = 500


class BadValue(ValueError):
    """A cell that cannot be sent as it is; the message is a reason code such as ``bad_currency``."""


def is_missing(value: Any) -> bool:
    """Whether a cell is missing: None, NaN, NaT, pd.NA, or a blank string."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    try:
        return bool(value != value)  # NaT and pd.NA are not equal to themselves
    except (TypeError, ValueError):
        return False


def clean_text(value: Any) -> str | None:
    """
    Render an identifier or text cell as a trimmed string: ``42`` and ``42.0`` become ``"42"``.

    :return: the string, or ``None`` when the cell is missing or blank.
    """
    if is_missing(value):
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating | decimal.Decimal):
        number = float(value) if not isinstance(value, decimal.Decimal) else value
        if number == int(number):
            return str(int(number))
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip() or None
    return str(value).strip() or None


def money(value: Any) -> float | int | None:
    """
    A finite, non-negative amount as a JSON number.

    :return: the number, or ``None`` for a missing cell (NULL and NaN both mean "no value").
    :raises BadValue: ``bad_value`` for a negative, infinite or non-numeric value.
    """
    if is_missing(value):
        return None
    if isinstance(value, bool | np.bool_):
        raise BadValue("bad_value")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise BadValue("bad_value") from None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadValue("bad_value") from None
    if not math.isfinite(number) or number < 0:
        raise BadValue("bad_value")
    return int(number) if number.is_integer() and abs(number) < 2**53 else round(number, 6)


def currency_code(value: Any) -> str | None:
    """
    An ISO 4217 code, trimmed and upper-cased.

    :raises BadValue: ``bad_currency`` unless the value is three ASCII letters.
    """
    if is_missing(value):
        return None
    code = str(value).strip().upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise BadValue("bad_currency")
    return code


def json_object(value: Any, reason: str) -> dict | None:
    """
    A JSON object given as a dict or as JSON text, passed through unchanged.

    :raises BadValue: ``reason`` when the cell holds anything but a JSON object.
    """
    if is_missing(value):
        return None
    value = _decoded(value, reason)
    if not isinstance(value, dict):
        raise BadValue(reason)
    return json_safe(value, reason)


def contents(value: Any) -> list[dict] | None:
    """
    Line items: a JSON array of objects (list or JSON text), each with an ``id``.

    :raises BadValue: ``bad_contents`` for anything else, for negative quantities or prices, or for more than
        :data:`MAX_CONTENTS_ITEMS` items.
    """
    if is_missing(value):
        return None
    value = _decoded(value, "bad_contents")
    if isinstance(value, tuple | np.ndarray):
        value = list(value)
    if not isinstance(value, list) or len(value) > MAX_CONTENTS_ITEMS:
        raise BadValue("bad_contents")
    items = []
    for item in value:
        if not isinstance(item, dict) or clean_text(item.get("id")) is None:
            raise BadValue("bad_contents")
        item = json_safe(item, "bad_contents")
        item["id"] = clean_text(item["id"])
        for key in ("quantity", "item_price"):
            if key in item and item[key] is not None:
                number = item[key]
                if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
                    raise BadValue("bad_contents")
        items.append(item)
    return items or None


def _decoded(value: Any, reason: str) -> Any:
    """The value itself, or what its JSON text holds; :class:`BadValue` ``reason`` for text that is not JSON."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise BadValue(reason) from None


def json_safe(value: Any, reason: str) -> Any:
    """
    Deep-convert a value to what ``json.dumps(allow_nan=False)`` accepts: numpy scalars to Python, Decimals
    to floats, datetimes to ISO strings.

    :raises BadValue: ``reason`` for NaN or infinity, or a type JSON cannot carry.
    """
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating | decimal.Decimal):
        number = float(value)
        if not math.isfinite(number):
            raise BadValue(reason)
        return number
    if isinstance(value, dict):
        return {str(k): json_safe(v, reason) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_safe(v, reason) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise BadValue(reason)
