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
    seconds (numbers or numeric strings) and ISO-8601 strings. A naive time that falls in a daylight-saving
    overlap takes the earlier instant; one that falls in a gap is shifted forward by the gap's length (read
    with the offset in force before the gap, as PostgreSQL and Python do), on every path. Times before
    1970, and times no calendar can hold, are unreadable.

    :param values: the ``event_time`` column of a chunk.
    :param timezone: IANA name of the zone of naive timestamps, e.g. ``UTC`` or ``America/New_York``.
    :return: ``(seconds, missing)``: float seconds, NaN where the value is missing or unreadable, and a
        boolean mask of the missing values (so ``isnan(seconds) & ~missing`` are the unreadable ones).
    """
    zone = ZoneInfo(timezone)
    missing = _missing_mask(values)
    try:
        seconds = _column_seconds(values, zone)
    except (OverflowError, ValueError, NotImplementedError, pd.errors.OutOfBoundsDatetime):
        seconds = _per_value_seconds(values, zone)  # a value beyond what pandas' (or Python's) timestamps hold
    with np.errstate(invalid="ignore"):
        seconds = np.floor(seconds)  # a new, writable array
        seconds[seconds < 0] = np.nan
    seconds[missing] = np.nan
    return seconds, missing


def _column_seconds(values: pd.Series, zone: ZoneInfo) -> np.ndarray:
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return _datetimes_to_seconds(values)
    if pd.api.types.is_datetime64_dtype(dtype):
        localized = values.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
        seconds = _datetimes_to_seconds(localized)
        in_transition = np.flatnonzero(np.isnan(seconds) & values.notna().to_numpy())
        if len(in_transition):  # overlaps and gaps: resolved as on the per-value path
            seconds[in_transition] = _per_value_seconds(values.iloc[in_transition], zone)
        return seconds
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return _plausible_epochs(values.to_numpy(dtype="float64", na_value=np.nan))
    return _per_value_seconds(values, zone)


def _per_value_seconds(values: pd.Series, zone: ZoneInfo) -> np.ndarray:
    return np.array([_one_value_seconds(value, zone) for value in values.tolist()], dtype="float64")


def _missing_mask(values: pd.Series) -> np.ndarray:
    missing: np.ndarray = values.isna().to_numpy(dtype=bool, na_value=True).copy()
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        blank = values.map(lambda v: isinstance(v, str) and not v.strip(), na_action="ignore")
        missing |= blank.to_numpy(dtype=bool, na_value=False)
    return missing


def _datetimes_to_seconds(values: pd.Series) -> np.ndarray:
    seconds: np.ndarray = (
        (values.dt.tz_convert("UTC") - _EPOCH_UTC).dt.total_seconds().to_numpy(dtype="float64", na_value=np.nan)
    )
    return seconds


def _plausible_epochs(numbers: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(numbers) | (numbers < 0) | (numbers > _MAX_EPOCH_SECONDS)
    numbers = numbers.copy()
    numbers[bad] = np.nan
    return numbers


def _one_value_seconds(value: object, zone: ZoneInfo) -> float:
    try:
        return _value_seconds(value, zone)
    except (
        OverflowError,
        ValueError,
        TypeError,
        NotImplementedError,
        OSError,
        ArithmeticError,
        pd.errors.OutOfBoundsDatetime,
    ):
        return math.nan


def _value_seconds(value: object, zone: ZoneInfo) -> float:
    if value is None or value is pd.NaT or value is pd.NA:
        return math.nan
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime(warn=False)
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=zone)  # fold=0: see above
        return moment.timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=zone).timestamp()
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            return math.nan
        moment = value.astype("datetime64[us]").item()  # an int when beyond datetime's years
        return _value_seconds(moment, zone) if isinstance(moment, dt.datetime | dt.date) else math.nan
    if isinstance(value, bool | np.bool_ | np.timedelta64):
        return math.nan
    if isinstance(value, int | float | decimal.Decimal | np.integer | np.floating):
        return _epoch_or_nan(float(value))
    if isinstance(value, str):
        return _string_seconds(value.strip(), zone)
    if isinstance(value, bytes | bytearray | memoryview):
        return _string_seconds(bytes(value).decode("utf-8").strip(), zone)
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
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return _value_seconds(moment, zone)
