"""
The cell reader every stage shares: what a raw warehouse cell means as text, a list of values or a JSON value.

Every column of the contract is read through this module, so that ``42``, ``42.0``, ``Decimal("42.0")``
and ``b"42"`` are the same ``"42"`` wherever they appear, and a cell no rule can read (a dict where text
is expected, bytes that are not UTF-8, an infinite number) is refused with a named reason instead of
crashing the run or being sent as its ``repr``. It imports no stage of the pipeline.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import json
import math
import uuid
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import pyarrow as pa

LIST_TYPES = (list, tuple, np.ndarray)
TEXT_BYTES = (bytes, bytearray, memoryview)
#: Deepest nesting accepted in a JSON cell (``user_data``, ``client_context``, ``contents``, ``custom_*``).
MAX_JSON_DEPTH = 32
#: An integral number with more digits than this is unreadable (shorter ones over 255 are `too long`).
_MAX_INTEGER_DIGITS = 4_000  # Python refuses to print an int of more than 4,300 digits
#: Integers are sent with every digit up to the magnitude of the largest finite double (309 digits): any JSON
#: reader can take them, as a double at worst. Beyond that an integer is refused, as an infinite float is.
_JSON_INT_LIMIT = 2**1024
#: Where float64 stops holding every integer: an integral ``value`` at least this large keeps its own digits.
#: What drivers give for ``inet`` (an address, or an interface, which is one) and ``cidr`` (a network).
_IP_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network)
#: Cells without a JSON type that JSON values carry as their text (see :func:`cell_text`): uuid, inet, cidr, time.
_TEXT_SCALARS = (uuid.UUID, dt.time, *_IP_TYPES)


class BadCell(ValueError):
    """A cell that cannot be sent as it is; the message is the reason code, such as ``bad_currency``."""


class UnreadableCell(ValueError):
    """A cell that is not text, a number, a date or bytes of UTF-8 text (a dict, an infinite number, ...)."""


def is_missing(value: Any) -> bool:
    """Whether a cell is missing: None, NaN (float or Decimal), NaT, ``pd.NA``, or a blank string."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    if isinstance(value, decimal.Decimal):
        return value.is_nan()
    if isinstance(value, np.datetime64 | np.timedelta64):
        return bool(np.isnat(value))
    return False


def cell_text(value: Any) -> str | None:
    """
    Render one scalar cell as trimmed text, the same way for every column.

    Integral numbers lose any decimal part (``42.0`` and ``Decimal("42.0")`` give ``"42"``), booleans are
    ``"true"``/``"false"``, bytes are decoded as UTF-8, dates and times are ISO-8601.

    :return: the text, or ``None`` for a missing or blank cell.
    :raises UnreadableCell: for a list, dict or other structure, bytes that are not UTF-8, an infinite number,
        or an integer too long to be an identifier.
    """
    if type(value) is str:
        return value.strip() or None
    if is_missing(value):
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, np.timedelta64 | dt.timedelta):  # numpy makes timedelta64 an integer: not an id
        raise UnreadableCell("a duration where text is expected")
    if isinstance(value, TEXT_BYTES):
        return bytes_text(value).strip() or None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return _integer_text(int(value))
    if isinstance(value, float | np.floating):
        return _float_text(float(value))
    if isinstance(value, decimal.Decimal):
        return _decimal_text(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return _iso_text(value)
    if isinstance(value, np.datetime64):
        return _datetime64_text(value)
    if isinstance(value, (uuid.UUID, *_IP_TYPES)):
        return str(value)
    raise UnreadableCell(f"a {type(value).__name__} cell where text is expected")


def _iso_text(value: dt.date | dt.time) -> str:
    try:
        return value.isoformat()
    except (NotImplementedError, ValueError, OverflowError):  # a pandas Timestamp beyond Python's year 9999
        raise UnreadableCell("a time beyond year 9999") from None


def _datetime64_text(value: np.datetime64) -> str:
    """ISO text, as ``datetime.isoformat`` writes the same time."""
    moment = value.astype("datetime64[us]").item()  # an int when beyond datetime's years
    if not isinstance(moment, dt.datetime | dt.date):
        raise UnreadableCell("a time beyond the calendar's years")
    return moment.isoformat()


def bytes_text(value: bytes | bytearray | memoryview) -> str:
    """
    Decode a bytes cell (bytea, VARBINARY) as the UTF-8 text it holds.

    :raises UnreadableCell: for bytes that are not UTF-8 text.
    """
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableCell("bytes that are not UTF-8 text") from None


def _integer_text(number: int) -> str:
    if number.bit_length() > _MAX_INTEGER_DIGITS * 3.33:
        raise UnreadableCell("an integer too long to be an identifier")
    return str(number)


def _float_text(number: float) -> str:
    if not math.isfinite(number):
        raise UnreadableCell("an infinite number")
    return _integer_text(int(number)) if number.is_integer() else repr(number)


def _decimal_text(number: decimal.Decimal) -> str:
    if not number.is_finite():
        raise UnreadableCell("an infinite number")
    if not -_MAX_INTEGER_DIGITS <= number.adjusted() <= _MAX_INTEGER_DIGITS:
        raise UnreadableCell("a number too long to be an identifier")
    if number == number.to_integral_value():
        return str(int(number))
    return format(number, "f").rstrip("0")  # every digit, none of the trailing zeros (no context rounding)


# -- lists ---------------------------------------------------------------------------------------------


def split_cell(value: Any) -> tuple[Any, ...]:
    """
    Return the elements of a cell: a list-like cell or a JSON array text is split, a scalar is one element.

    Missing cells and empty lists give an empty tuple. Elements are returned as they are; a nested list or
    dict among them is for the caller to refuse.
    """
    if isinstance(value, LIST_TYPES):
        return tuple(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            parsed = loads_json(text)
            if isinstance(parsed, list):
                return tuple(parsed)
        return (value,) if text else ()
    if is_missing(value):
        return ()
    return (value,)


def arrow_text(series: pd.Series) -> pa.Array | None:
    """
    Return the cells of a text column pandas holds in Arrow (its ``str`` dtype with pyarrow) as one Arrow array,
    its chunks combined; ``None`` for any other column.
    """
    if not (isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow"):
        return None
    import pyarrow as pa

    column = pa.array(series.array)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def factorize_cells(values: pd.Series | np.ndarray | list[Any]) -> tuple[np.ndarray, list[Hashable]]:
    """
    Factorize cells that may hold lists: codes per row (-1 for missing) and the distinct cells.

    List-like cells become tuples so they can be compared; pandas' own factorize is used when no cell
    is a list, which is the common case and much faster.
    """
    array = values.to_numpy(dtype=object) if isinstance(values, pd.Series) else np.asarray(values, dtype=object)
    try:
        codes, uniques = pd.factorize(array, use_na_sentinel=True)
        return codes, list(uniques)
    except TypeError:
        pass
    hashable = np.empty(len(array), dtype=object)
    for position, value in enumerate(array):
        hashable[position] = hashable_cell(value)
    codes, uniques = pd.factorize(hashable, use_na_sentinel=True)
    return codes, list(uniques)


def hashable_cell(value: Any) -> Hashable:
    """Turn a cell into a dict key: lists become tuples, other unhashable cells (dicts) an :class:`OpaqueCell`."""
    if isinstance(value, LIST_TYPES):
        return tuple(hashable_cell(element) for element in value)
    try:
        hash(value)
    except TypeError:
        return OpaqueCell(value)
    return cast(Hashable, value)


class OpaqueCell:
    """
    An unhashable cell (a dict, a set) standing in as a dict key: equal only to itself, so it is never
    confused with another cell, and unreadable as text.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"OpaqueCell({type(self.value).__name__})"


def map_distinct(values: pd.Series, function: Callable[[Any], str | None]) -> pd.Series:
    """
    Apply ``function`` once per distinct non-missing cell and spread the results back over the rows.

    The result is a ``string`` Series on the same index, NA where the cell is missing or ``function``
    returned None.
    """
    codes, uniques = factorize_cells(values)
    mapped = np.empty(len(uniques) + 1, dtype=object)
    mapped[: len(uniques)] = [function(value) for value in uniques]
    mapped[len(uniques)] = None
    return pd.Series(mapped[codes], index=values.index, dtype="string")


# -- JSON values ---------------------------------------------------------------------------------------


#: What :func:`loads_json` gives for text that is not JSON.
NOT_JSON = object()


def loads_json(text: str) -> Any:
    """Return the value JSON ``text`` holds, or :data:`NOT_JSON` (also for nesting too deep for the parser)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return NOT_JSON


def json_safe(value: Any, reason: str, depth: int = 0) -> Any:
    """
    Deep-convert a value to what the request encoder accepts: numpy scalars to Python, Decimals to floats
    (integral ones, as NUMERIC gives them, to integers with every digit), bytes to text, datetimes to ISO
    strings, uuids, IP addresses and times of day to their text, durations to ISO 8601 text (``P1DT2H``).

    :raises BadCell: ``reason`` for NaN or infinity, a number beyond the range of a double, bytes that are not
        UTF-8, nesting deeper than :data:`MAX_JSON_DEPTH`, or a type JSON cannot carry.
    """
    if value is None or isinstance(value, str | bool):
        return value
    if depth > MAX_JSON_DEPTH:
        raise BadCell(reason)
    if isinstance(value, np.timedelta64 | dt.timedelta):  # before integers: numpy makes timedelta64 one
        try:
            return duration_text(value)
        except UnreadableCell:
            raise BadCell(reason) from None
    if isinstance(value, int | np.integer) and not isinstance(value, np.bool_):
        number: int | float = int(value)
        if not -_JSON_INT_LIMIT < number < _JSON_INT_LIMIT:
            raise BadCell(reason)
        return number
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, float | np.floating | decimal.Decimal):
        try:
            number = float(value)
        except (ValueError, ArithmeticError):
            raise BadCell(reason) from None
        if not math.isfinite(number):
            raise BadCell(reason)
        if isinstance(value, decimal.Decimal) and value == value.to_integral_value():
            return int(value)  # 9007199254740993 and 30-digit NUMERICs keep every digit (float64 rounds them)
        return number
    if isinstance(value, dict):
        return {_json_key(key, reason): json_safe(item, reason, depth + 1) for key, item in value.items()}
    if isinstance(value, LIST_TYPES):
        return [json_safe(item, reason, depth + 1) for item in value]
    if isinstance(value, TEXT_BYTES):
        try:
            return bytes_text(value)
        except UnreadableCell:
            raise BadCell(reason) from None
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, dt.datetime | dt.date):
        try:
            return _iso_text(value)
        except UnreadableCell:
            raise BadCell(reason) from None
    if isinstance(value, np.datetime64):
        try:
            return None if np.isnat(value) else _datetime64_text(value)
        except UnreadableCell:
            raise BadCell(reason) from None
    if isinstance(value, _TEXT_SCALARS):
        try:
            return cell_text(value)
        except UnreadableCell:
            raise BadCell(reason) from None
    raise BadCell(reason)


def duration_text(value: np.timedelta64 | dt.timedelta) -> str:
    """
    Write a duration (``interval``) as ISO 8601 text, ``P1DT2H30M`` or ``-PT0.000005S``: days, hours, minutes and
    seconds, each only when not zero.

    :raises UnreadableCell: for a numpy duration pandas cannot hold (NaT, months, years, beyond its range).
    """
    duration: dt.timedelta
    if isinstance(value, np.timedelta64):
        try:
            converted = pd.Timedelta(value)
        except (ValueError, OverflowError):
            raise UnreadableCell("a duration without a fixed length") from None
        if converted is pd.NaT:
            raise UnreadableCell("a missing duration")
        duration = converted
    else:
        duration = value
    microseconds = (duration.days * 86_400 + duration.seconds) * 10**6 + duration.microseconds
    nanoseconds = microseconds * 1_000 + getattr(duration, "nanoseconds", 0)  # pandas' Timedelta holds nanoseconds
    sign, nanoseconds = ("-" if nanoseconds < 0 else ""), abs(nanoseconds)
    days, rest = divmod(nanoseconds, 86_400 * 10**9)
    hours, rest = divmod(rest, 3_600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds, fraction = divmod(rest, 10**9)
    time = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if seconds or fraction:
        time += f"{seconds}.{fraction:09d}".rstrip("0").rstrip(".") + "S"
    if not days and not time:
        return "PT0S"
    return f"{sign}P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")


def _json_key(key: Any, reason: str) -> str:
    try:
        text = cell_text(key)
    except UnreadableCell:
        raise BadCell(reason) from None
    return "" if text is None else text
