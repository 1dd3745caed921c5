"""The cell reader: what a raw warehouse cell means as text, a number, a JSON value or a list of values.

Every column of the contract is read through this module, so that ``42``, ``42.0``, ``Decimal("42.0")``
and ``b"42"`` are the same ``"42"`` wherever they appear, and a cell no rule can read (a dict where text
is expected, bytes that are not UTF-8, an infinite number) is refused with a named reason instead of
crashing the run or being sent as its ``repr``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import json
import math
import uuid
from collections.abc import Callable, Hashable
from typing import Any, cast

import numpy as np
import pandas as pd

from airflow_provider_gravity.conversions.events.encode import JsonNumbers

LIST_TYPES = (list, tuple, np.ndarray)
TEXT_BYTES = (bytes, bytearray, memoryview)
MAX_CONTENTS_ITEMS = 500
#: Deepest nesting accepted in a JSON cell (``user_data``, ``client_context``, ``contents``, ``custom_*``).
MAX_JSON_DEPTH = 32
#: An integral number with more digits than this is unreadable (shorter ones over 255 are `too long`).
_MAX_INTEGER_DIGITS = 4_000  # Python refuses to print an int of more than 4,300 digits
#: Integers are sent with every digit up to the magnitude of the largest finite double (309 digits): any JSON
#: reader can take them, as a double at worst. Beyond that an integer is refused, as an infinite float is.
_JSON_INT_LIMIT = 2**1024
#: Where float64 stops holding every integer: an integral ``value`` at least this large keeps its own digits.
_EXACT_FLOAT_LIMIT = 2**53
#: What drivers give for ``inet`` (an address, or an interface, which is one) and ``cidr`` (a network).
_IP_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network)
#: Cells without a JSON type that JSON values carry as their text (see :func:`cell_text`): uuid, inet, cidr, time.
_TEXT_SCALARS = (uuid.UUID, dt.time, *_IP_TYPES)

Converted = tuple[list[Any], list[str | None]]
#: Plain numbers converted: held as float64 for the encoder, read row by row as Python numbers.
NumbersConverted = tuple[JsonNumbers, list[str | None]]


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
    A bytes cell (bytea, VARBINARY) as the UTF-8 text it holds.

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


def quiet_signaling_nans(frame: pd.DataFrame) -> None:
    """
    Replace ``Decimal("sNaN")`` cells by ``Decimal("NaN")`` in place: pandas raises on signaling NaNs
    (``isna`` compares them), and a NaN means a missing value like any other.
    """
    for name in frame.columns:
        column = frame[name]
        if column.dtype != object:
            continue
        try:
            column.isna()
        except (ArithmeticError, TypeError):
            frame[name] = column.map(_quiet_nan)


def localizable_times(frame: pd.DataFrame, keep: str = "event_time") -> None:
    """
    Make every time-zone-aware datetime column but ``keep`` readable cell by cell, in place. pandas cannot turn
    a time beyond year 9999 in a zone into a Python datetime, and raises on the whole column; such a cell
    becomes an :class:`UnreadableTime` (unreadable for every reader), the others keep their value.
    """
    for position, name in enumerate(frame.columns):
        column = frame.iloc[:, position]
        if name != keep and isinstance(column.dtype, pd.DatetimeTZDtype) and _near_python_year_limits(column):
            frame.isetitem(position, pd.Series(_localized_cells(column), index=frame.index, dtype=object))


#: A day inside Python's years 1 and 9999: no zone's offset takes a time between these out of that range.
_SAFE_UTC_RANGE = (np.datetime64("0001-01-02"), np.datetime64("9999-12-30"))


def _near_python_year_limits(column: pd.Series) -> bool:
    """Whether some time of a zoned column lies outside :data:`_SAFE_UTC_RANGE` in UTC (checked without Python)."""
    utc = column.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    earliest, latest = _SAFE_UTC_RANGE
    return bool(((utc < earliest) | (utc > latest)).any())


class UnreadableTime:
    """A time pandas cannot hold in its zone (beyond year 9999): no reader takes it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UnreadableTime()"


def _localized_cells(column: pd.Series) -> list[Any]:
    cells: list[Any] = []
    for position in range(len(column)):
        try:
            cells.append(column.iloc[position])
        except (NotImplementedError, ValueError, OverflowError):
            cells.append(UnreadableTime())
    return cells


def _quiet_nan(value: Any) -> Any:
    if isinstance(value, decimal.Decimal) and value.is_snan():
        return decimal.Decimal("NaN")
    return value


# -- lists ---------------------------------------------------------------------------------------------


def split_cell(value: Any) -> tuple[Any, ...]:
    """
    The elements of a cell: a list-like cell or a JSON array text is split, a scalar is one element.

    Missing cells and empty lists give an empty tuple. Elements are returned as they are; a nested list or
    dict among them is for the caller to refuse.
    """
    if isinstance(value, LIST_TYPES):
        return tuple(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            parsed = _json_loads(text)
            if isinstance(parsed, list):
                return tuple(parsed)
        return (value,) if text else ()
    if is_missing(value):
        return ()
    return (value,)


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
    """A cell as a dict key: lists become tuples, other unhashable cells (dicts) an :class:`OpaqueCell`."""
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


# -- numbers and codes ---------------------------------------------------------------------------------


_PLAIN_NUMBER_TYPES = frozenset({int, float, decimal.Decimal})


def money(value: Any) -> float | int | None:
    """
    A finite, non-negative amount as a JSON number.

    :return: the number, or ``None`` for a missing cell (NULL and NaN both mean "no value").
    :raises BadCell: ``bad_value`` for a negative, infinite or non-numeric value.
    """
    if is_missing(value):
        return None
    if isinstance(value, bool | np.bool_):
        raise BadCell("bad_value")
    if isinstance(value, (str, *TEXT_BYTES)):
        try:
            text = cell_text(value) or "nan"
            # Python's float() also reads "1_000" and digits of other scripts, which no warehouse writes as a number.
            if not text.isascii() or "_" in text:
                raise ValueError(text)
            value = float(text)
        except (UnreadableCell, ValueError):
            raise BadCell("bad_value") from None
        if value >= _EXACT_FLOAT_LIMIT and text.isdigit():
            value = int(text)  # "9007199254740993": its own digits, not the float's
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        raise BadCell("bad_value") from None
    if not math.isfinite(number) or number < 0:
        raise BadCell("bad_value")
    if number.is_integer() and number < _EXACT_FLOAT_LIMIT:
        return int(number)
    exact = _exact_integer(value)
    return round(number, 6) if exact is None else exact


def _exact_integer(value: Any) -> int | None:
    """The integer an int or an integral ``Decimal`` holds, every digit; ``None`` for any other cell."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, decimal.Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    return None


def currency_code(value: Any) -> str | None:
    """
    An ISO 4217 code, trimmed and upper-cased.

    :raises BadCell: ``bad_currency`` unless the value is three ASCII letters.
    """
    try:
        text = cell_text(value)
    except UnreadableCell:
        raise BadCell("bad_currency") from None
    if text is None:
        return None
    code = text.upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise BadCell("bad_currency")
    return code


# -- JSON cells ----------------------------------------------------------------------------------------


def json_object(value: Any, reason: str) -> dict[str, Any] | None:
    """
    A JSON object given as a dict or as JSON text, passed through unchanged.

    :raises BadCell: ``reason`` when the cell holds anything but a JSON object.
    """
    if is_missing(value):
        return None
    value = _decoded(value, reason)
    if not isinstance(value, dict):
        raise BadCell(reason)
    return cast("dict[str, Any]", json_safe(value, reason))


def contents(value: Any) -> list[dict[str, Any]] | None:
    """
    Line items: a JSON array of objects (list or JSON text), each with an ``id``.

    :raises BadCell: ``bad_contents`` for anything else, for negative quantities or prices, or for more than
        :data:`MAX_CONTENTS_ITEMS` items.
    """
    if is_missing(value):
        return None
    value = _decoded(value, "bad_contents")
    if isinstance(value, tuple | np.ndarray):
        value = list(value)
    if not isinstance(value, list) or len(value) > MAX_CONTENTS_ITEMS:
        raise BadCell("bad_contents")
    items = []
    for item in json_safe(value, "bad_contents"):
        if not isinstance(item, dict):
            raise BadCell("bad_contents")
        try:
            item_id = cell_text(item.get("id"))
        except UnreadableCell:
            raise BadCell("bad_contents") from None
        if item_id is None:
            raise BadCell("bad_contents")
        item["id"] = item_id
        for key in ("quantity", "item_price"):
            number = item.get(key)
            if number is not None and (isinstance(number, bool) or not isinstance(number, int | float) or number < 0):
                raise BadCell("bad_contents")
        items.append(item)
    return items or None


def _decoded(value: Any, reason: str) -> Any:
    """The value itself, or what its JSON text holds; :class:`BadCell` ``reason`` for text that is not JSON."""
    if isinstance(value, TEXT_BYTES):
        try:
            value = bytes_text(value)
        except UnreadableCell:
            raise BadCell(reason) from None
    if not isinstance(value, str):
        return value
    parsed = _json_loads(value)
    if parsed is _NOT_JSON:
        raise BadCell(reason)
    return parsed


_NOT_JSON = object()


def _json_loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NOT_JSON


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
    A duration (``interval``) as ISO 8601 text, ``P1DT2H30M`` or ``-PT0.000005S``: days, hours, minutes and
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


def custom_value(value: Any) -> Any:
    """
    One ``custom_<key>`` cell as sent: text trimmed, as every column's text is; anything else made JSON-safe
    (:func:`json_safe`), its inner texts kept as they are.

    :raises BadCell: ``bad_custom_data`` where :func:`json_safe` refuses the value.
    """
    converted = json_safe(value, "bad_custom_data")
    return converted.strip() if isinstance(converted, str) else converted


def _json_key(key: Any, reason: str) -> str:
    try:
        text = cell_text(key)
    except UnreadableCell:
        raise BadCell(reason) from None
    return "" if text is None else text


# -- whole columns -------------------------------------------------------------------------------------


def text_column(series: pd.Series) -> tuple[list[str | None], list[bool]]:
    """
    Each cell of a column as text (see :func:`cell_text`), and which cells could not be read.

    :return: ``(texts, unreadable)``: ``None`` where the cell is missing, blank or unreadable; ``True`` in
        ``unreadable`` where it was unreadable.
    """
    rows = len(series)
    if pd.api.types.is_integer_dtype(series.dtype) and not series.hasnans:
        return [str(value) for value in series.tolist()], [False] * rows
    texts: list[str | None] = []
    unreadable = [False] * rows
    for row, value in enumerate(series.tolist()):
        if type(value) is str:
            texts.append(value.strip() or None)
            continue
        try:
            texts.append(cell_text(value))
        except UnreadableCell:
            texts.append(None)
            unreadable[row] = True
    return texts, unreadable


def money_column(series: pd.Series) -> Converted | NumbersConverted:
    """
    ``value`` cells as JSON numbers (``None`` where missing) and the ``bad_value`` reason where a cell is
    negative, infinite or not a number. Plain numbers (also the ``Decimal`` of NUMERIC columns, as the cursor
    and the Arrow reader give them) are checked with numpy, and kept as float64 (:class:`JsonNumbers`) for the
    encoder; other cells one by one. Integral ints and Decimals keep every digit, also beyond 2**53 where float64
    rounds them.
    """
    dtype = series.dtype
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        numbers = series.to_numpy(dtype="float64", na_value=np.nan)
        return _exact_large_integers(series, numbers, _json_numbers(numbers))
    if dtype != np.dtype(object):
        return per_distinct_value(series, money)
    objects = series.to_numpy(dtype=object)
    kinds = np.fromiter(map(type, objects), dtype=object, count=len(series))
    plain = np.fromiter(map(_PLAIN_NUMBER_TYPES.__contains__, kinds), dtype=bool, count=len(kinds))
    if plain.all():  # NUMERIC's Decimals: float() of each, in numpy's loop (a signaling NaN refuses: below)
        try:
            numbers = np.asarray(objects, dtype=np.float64)
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            pass
        else:
            return _exact_large_integers(series, numbers, _json_numbers(numbers))
    try:
        numbers = pd.to_numeric(series.where(plain), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        return per_distinct_value(series, money)
    if plain.all():
        return _exact_large_integers(series, numbers, _json_numbers(numbers))
    converted, reasons = per_distinct_value(series.where(~plain), money)  # the rest: the careful way
    plain_converted, plain_reasons = _exact_large_integers(series, numbers, _json_numbers(numbers))
    for i in np.flatnonzero(plain).tolist():
        converted[i], reasons[i] = plain_converted[i], plain_reasons[i]
    return converted, reasons


def _exact_large_integers(series: pd.Series, numbers: np.ndarray, converted: NumbersConverted) -> NumbersConverted:
    """
    ``converted`` (from the float64 ``numbers`` of ``series``) with each sent number of 2**53 or more that was an
    int or an integral ``Decimal`` in ``series`` kept as that integer, every digit (float64 made
    9007199254740993 into ...992). Few rows if any: found with numpy, fixed one by one.
    """
    values, reasons = converted
    with np.errstate(invalid="ignore"):
        large = np.flatnonzero(np.isfinite(numbers) & (numbers >= _EXACT_FLOAT_LIMIT))
    if large.size:
        cells = series.to_numpy(dtype=object)
        for i in large.tolist():
            exact = _exact_integer(cells[i])
            if exact is not None and reasons[i] is None:
                values.exact[i] = exact
    return values, reasons


#: Below 2**33 a double's spacing is under 1e-6, so a double nearest a 6-place decimal rounds back to itself.
_ROUNDED_AS_IS_LIMIT = 2.0**33


def _json_numbers(numbers: np.ndarray) -> NumbersConverted:
    missing = np.isnan(numbers)
    with np.errstate(invalid="ignore"):
        bad = np.isinf(numbers) | (numbers < 0)
    sent = ~missing & ~bad
    whole = sent & (np.abs(numbers) < 2**53) & (np.floor(numbers) == numbers)
    # As money() does one by one: whole numbers exact, others rounded to 6 places by Python. numpy's round
    # multiplies first (913123182072546 came back as ...545), but where it leaves a number below 2**33 as it
    # is, that number is the double nearest a 6-place decimal, which Python's round leaves as it is too.
    with np.errstate(invalid="ignore"):
        unchanged = sent & ~whole & (np.abs(numbers) < _ROUNDED_AS_IS_LIMIT) & (np.round(numbers, 6) == numbers)
    written = np.where(sent, numbers, np.nan)
    rounded = np.flatnonzero(sent & ~whole & ~unchanged)
    written[rounded] = [round(number, 6) for number in numbers[rounded].tolist()]
    return JsonNumbers(written, whole), np.where(bad, "bad_value", None).tolist()  # type: ignore[call-overload]


def per_distinct_value(series: pd.Series, convert: Callable[[Any], Any]) -> Converted:
    """
    Apply ``convert`` once per distinct cell (currencies and prices repeat); a :class:`BadCell` it raises
    becomes the cell's reason.
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
            except BadCell as bad:
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
        if is_missing(value):
            converted.append(None)
            reasons.append(None)
            continue
        try:
            converted.append(convert(value))
            reasons.append(None)
        except BadCell as bad:
            converted.append(None)
            reasons.append(str(bad))
    return converted, reasons
