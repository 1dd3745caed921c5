"""
The fields of an event read from their columns: amounts, currencies, line items, JSON objects and
``custom_data`` values, each refused with a named reason (:class:`~..cells.BadCell`) rather than sent as it came.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from airflow_provider_gravity.conversions.cells import (
    NOT_JSON,
    TEXT_BYTES,
    BadCell,
    UnreadableCell,
    arrow_text,
    bytes_text,
    cell_text,
    is_missing,
    json_safe,
    loads_json,
)
from airflow_provider_gravity.conversions.events.encode import JsonNumbers

if TYPE_CHECKING:
    import pyarrow as pa

MAX_CONTENTS_ITEMS = 500
_EXACT_FLOAT_LIMIT = 2**53

Converted = tuple[list[Any], list[str | None]]
#: Plain numbers converted: held as float64 for the encoder, read row by row as Python numbers.
NumbersConverted = tuple[JsonNumbers, list[str | None]]


# -- numbers and codes ---------------------------------------------------------------------------------


_PLAIN_NUMBER_TYPES = frozenset({int, float, decimal.Decimal})


def money(value: Any) -> float | int | None:
    """
    Read a finite, non-negative amount as a JSON number.

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
    """Return the integer an int or an integral ``Decimal`` holds, every digit; ``None`` for any other cell."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, decimal.Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    return None


def currency_code(value: Any) -> str | None:
    """
    Read an ISO 4217 code, trimmed and upper-cased.

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
    Read a JSON object given as a dict or as JSON text, passed through unchanged.

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
    """Return the value itself, or what its JSON text holds; :class:`BadCell` ``reason`` for text that is not JSON."""
    if isinstance(value, TEXT_BYTES):
        try:
            value = bytes_text(value)
        except UnreadableCell:
            raise BadCell(reason) from None
    if not isinstance(value, str):
        return value
    parsed = loads_json(value)
    if parsed is NOT_JSON:
        raise BadCell(reason)
    return parsed


def custom_value(value: Any) -> Any:
    """
    One ``custom_<key>`` cell as sent: text trimmed, as every column's text is; anything else made JSON-safe
    (:func:`json_safe`), its inner texts kept as they are.

    :raises BadCell: ``bad_custom_data`` where :func:`json_safe` refuses the value.
    """
    converted = json_safe(value, "bad_custom_data")
    return converted.strip() if isinstance(converted, str) else converted


# -- whole columns -------------------------------------------------------------------------------------

# Text that begins and ends with printable ASCII other than a space: str.strip() leaves it as it is.
_UNSTRIPPED_TEXT = r"(?s)^[\x21-\x7e](.*[\x21-\x7e])?$"


def _arrow_text_column(column: pa.Array) -> list[str | None]:
    """
    Return the texts of a column pandas holds in Arrow: as they are where no space or other character
    ``str.strip`` removes is at either end (found by one Arrow kernel), stripped by Python elsewhere.
    """
    import pyarrow.compute as pc

    texts: list[str | None] = column.to_pylist()
    unchanged = pc.fill_null(pc.match_substring_regex(column, _UNSTRIPPED_TEXT), True)
    for row in np.flatnonzero(~np.asarray(unchanged)).tolist():
        texts[row] = cast(str, texts[row]).strip() or None
    return texts


def text_column(series: pd.Series) -> tuple[list[str | None], list[bool]]:
    """
    Each cell of a column as text (see :func:`cell_text`), and which cells could not be read.

    :return: ``(texts, unreadable)``: ``None`` where the cell is missing, blank or unreadable; ``True`` in
        ``unreadable`` where it was unreadable.
    """
    rows = len(series)
    if pd.api.types.is_integer_dtype(series.dtype) and not series.hasnans:
        return [str(value) for value in series.tolist()], [False] * rows
    if (column := arrow_text(series)) is not None:
        return _arrow_text_column(column), [False] * rows
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
    if _PLAIN_NUMBER_TYPES.issuperset(map(type, objects)):  # nearly always: one pass, no mask
        plain = np.ones(len(objects), dtype=bool)
    else:
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
    Return ``converted`` (from the float64 ``numbers`` of ``series``) with each sent number of 2**53 or more that was an
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
    if isinstance(series.dtype, pd.StringDtype):
        return _per_distinct_text(series, convert)
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


def _per_distinct_text(series: pd.Series, convert: Callable[[Any], Any]) -> Converted:
    """:func:`per_distinct_value` of a text column: its distinct strings found by pandas, in C."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    # The missing cell last (code -1), as the column holds it: NaN or pd.NA, by the dtype.
    cells = [*uniques.tolist(), series.dtype.na_value]
    results = np.empty(len(cells), dtype=object)
    reasons = np.empty(len(cells), dtype=object)
    for position, cell in enumerate(cells):
        try:
            results[position] = convert(cell)
        except BadCell as bad:
            reasons[position] = str(bad)
    return results[codes].tolist(), reasons[codes].tolist()


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
