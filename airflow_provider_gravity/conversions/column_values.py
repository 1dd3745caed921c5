"""Convert whole columns at once, so that the per-row loop only assembles events."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from airflow_provider_gravity.conversions import values as cells

Converted = tuple[list[Any], list[str | None]]


def text_column(series: pd.Series) -> list[str | None]:
    """Each cell as a trimmed string (``42`` and ``42.0`` as ``"42"``), ``None`` for missing or blank."""
    if pd.api.types.is_integer_dtype(series.dtype) and not series.hasnans:
        return [str(value) for value in series.tolist()]
    out = []
    for value in series.tolist():
        if type(value) is str:
            value = value.strip()
            out.append(value or None)
        else:
            out.append(cells.clean_text(value))
    return out


def money_column(series: pd.Series) -> Converted:
    """
    ``value`` cells as JSON numbers (``None`` where missing) and the ``bad_value`` reason where a cell is
    negative, infinite or not a number. Numbers (also ``Decimal`` from NUMERIC columns) are checked with numpy;
    other cells one by one.
    """
    dtype = series.dtype
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return _json_numbers(series.to_numpy(dtype="float64", na_value=np.nan))
    if dtype != np.dtype(object):
        return per_distinct_value(series, cells.money)
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    plain = series.map(type).isin((int, float, Decimal)).to_numpy(dtype=bool)
    if plain.all():
        return _json_numbers(numbers)
    converted, reasons = per_distinct_value(series, cells.money)  # strings, booleans: the careful way
    plain_converted, plain_reasons = _json_numbers(numbers)
    for i in np.flatnonzero(plain).tolist():
        converted[i], reasons[i] = plain_converted[i], plain_reasons[i]
    return converted, reasons


def _json_numbers(numbers: np.ndarray) -> Converted:
    missing = np.isnan(numbers)
    with np.errstate(invalid="ignore"):
        bad = np.isinf(numbers) | (numbers < 0)
    whole = ~missing & ~bad & (np.abs(numbers) < 2**53) & (np.floor(numbers) == numbers)
    rounded = np.round(numbers, 6).tolist()
    converted = [
        None if skip else int(number) if is_whole else number
        for number, skip, is_whole in zip(rounded, (missing | bad).tolist(), whole.tolist(), strict=True)
    ]
    return converted, np.where(bad, "bad_value", None).tolist()


def per_distinct_value(series: pd.Series, convert: Callable[[Any], Any]) -> Converted:
    """
    Apply ``convert`` once per distinct cell (currencies and prices repeat); a :class:`values.BadValue` it
    raises becomes the cell's reason.
    """
    results: dict[Any, tuple[Any, str | None]] = {}
    converted: list[Any] = []
    reasons: list[str | None] = []
    for value in series.tolist():
        key = (type(value), value)  # True and 1 are equal keys, but not the same value
        try:
            result = results.get(key)
        except TypeError:  # unhashable cells (lists, dicts) are converted each time
            result = None
        if result is None:
            try:
                result = (convert(value), None)
            except cells.BadValue as bad:
                result = (None, str(bad))
            try:
                results[key] = result
            except TypeError:
                pass
        converted.append(result[0])
        reasons.append(result[1])
    return converted, reasons


def per_cell(series: pd.Series, convert: Callable[[Any], Any]) -> Converted:
    """Apply ``convert`` to each non-missing cell (JSON text that is unique per row, such as line items)."""
    converted: list[Any] = []
    reasons: list[str | None] = []
    for value in series.tolist():
        if cells.is_missing(value):
            converted.append(None)
            reasons.append(None)
            continue
        try:
            converted.append(convert(value))
            reasons.append(None)
        except cells.BadValue as bad:
            converted.append(None)
            reasons.append(str(bad))
    return converted, reasons
