"""Turn the ``event_time`` column, whatever the warehouse made of it, into Unix seconds."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

# Epoch values above this are milliseconds or microseconds, not seconds (year 5138 in seconds).
_MAX_EPOCH_SECONDS = 1e11
_EPOCH_UTC = pd.Timestamp(0, tz="UTC")


def event_time_seconds(values: pd.Series, timezone: str) -> tuple[np.ndarray, np.ndarray]:
    """
    Convert event times to Unix seconds.

    Accepts timestamps (naive ones are read in ``timezone``), timezone-aware timestamps, dates, epoch
    seconds (numbers or numeric strings) and ISO-8601 strings.

    :param values: the ``event_time`` column of a chunk.
    :param timezone: IANA name of the zone of naive timestamps, e.g. ``UTC`` or ``America/New_York``.
    :return: ``(seconds, missing)``: float seconds, NaN where the value is missing or unreadable, and a
        boolean mask of the missing values (so ``isnan(seconds) & ~missing`` are the unreadable ones).
    """
    zone = ZoneInfo(timezone)
    missing = _missing_mask(values)
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        seconds = _datetimes_to_seconds(values)
    elif pd.api.types.is_datetime64_dtype(dtype):
        localized = values.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
        seconds = _datetimes_to_seconds(localized)
    elif pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        seconds = _plausible_epochs(values.to_numpy(dtype="float64", na_value=np.nan))
    else:
        seconds = np.array([_one_value_seconds(value, zone) for value in values], dtype="float64")
    seconds = np.floor(seconds)  # a new, writable array
    seconds[missing] = np.nan
    return seconds, missing


def _missing_mask(values: pd.Series) -> np.ndarray:
    missing = values.isna().to_numpy(dtype=bool, na_value=True).copy()
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        blank = values.map(lambda v: isinstance(v, str) and not v.strip(), na_action="ignore")
        missing |= blank.to_numpy(dtype=bool, na_value=False)
    return missing


def _datetimes_to_seconds(values: pd.Series) -> np.ndarray:
    return (values.dt.tz_convert("UTC") - _EPOCH_UTC).dt.total_seconds().to_numpy(dtype="float64", na_value=np.nan)


def _plausible_epochs(numbers: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(numbers) | (numbers < 0) | (numbers > _MAX_EPOCH_SECONDS)
    numbers = numbers.copy()
    numbers[bad] = np.nan
    return numbers


def _one_value_seconds(value: object, zone: ZoneInfo) -> float:
    if value is None or value is pd.NaT:
        return math.nan
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=zone)
        return moment.timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=zone).timestamp()
    if isinstance(value, np.datetime64):
        return _one_value_seconds(pd.Timestamp(value).to_pydatetime(), zone)
    if isinstance(value, bool | np.bool_):
        return math.nan
    if isinstance(value, int | float | decimal.Decimal | np.integer | np.floating):
        return _epoch_or_nan(float(value))
    if isinstance(value, str):
        return _string_seconds(value.strip(), zone)
    return math.nan


def _epoch_or_nan(number: float) -> float:
    if math.isfinite(number) and 0 <= number <= _MAX_EPOCH_SECONDS:
        return number
    return math.nan


def _string_seconds(text: str, zone: ZoneInfo) -> float:
    try:
        return _epoch_or_nan(float(text))
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return math.nan
    return _one_value_seconds(moment, zone)
