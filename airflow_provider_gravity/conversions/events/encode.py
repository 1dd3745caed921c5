"""
Events written as JSON column by column: no dict per event on the way to the request body.

Each field of a chunk becomes a column of JSON fragments (``"em":["9f86..."]``), computed once per
distinct value or by Arrow kernels; a row's event is its fragments joined in key order, by Arrow. The text
is canonical JSON (keys sorted, no spaces, ASCII with ``\\u`` escapes), the same text
``json.dumps(event, sort_keys=True, separators=(",", ":"))`` gives for the event as a dict: what is sent is
also what the delivery log hashes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_gravity.conversions.canonical_json import json_value

#: Top-level keys with a fragment column, in canonical (sorted) order.
TOP_KEYS = (
    "action_source",
    "client_context",
    "custom_data",
    "event_id",
    "event_name",
    "event_source_url",
    "event_time",
    "user_data",
)
# Text that is its own JSON string body: printable ASCII without a quote or a backslash (RE2 syntax).
_PLAIN_JSON_STRING = r"^[\x20\x21\x23-\x5b\x5d-\x7e]*$"


class Fragments(NamedTuple):
    """
    The JSON fragments ``"key":value`` of one field, one per row (``None`` where the field is absent).

    A row's fragment is ``prefix + fragments[row] + suffix``: fields written by Arrow keep their key (and a text's
    quotes) apart, and :func:`joined_objects` writes them in the join that writes the event, not in a join of their
    own over every row.

    :param fragments: each row's fragment, or the part of it between ``prefix`` and ``suffix``, as a list or an
        Arrow string array.
    :param unencodable: the rows whose value cannot be written (a lone surrogate, a number JSON cannot hold).
    :param prefix: what each present row's fragment starts with before ``fragments`` (``"key":``), if anything.
    :param suffix: what each present row's fragment ends with after ``fragments``, if anything.
    """

    fragments: list[str | None] | pa.Array
    unencodable: list[int]
    prefix: str = ""
    suffix: str = ""

    def texts(self) -> list[str | None]:
        """Return each row's whole fragment, ``None`` where the field is absent: for checks, not the hot path."""
        values = self.fragments if isinstance(self.fragments, list) else self.fragments.to_pylist()
        return [None if value is None else self.prefix + value + self.suffix for value in values]


def fragments_of(
    key: str, values: Sequence[Any], write: Callable[[Any], str], *, by_identity: bool = False
) -> Fragments:
    """
    Write the fragments of one field, each distinct value written once.

    :param key: the field's key in its object.
    :param values: one value per row, ``None`` where absent.
    :param write: the value's JSON text (:func:`json_string` for text, :func:`json_value` otherwise).
    :param by_identity: remember texts by the value's identity: for shared objects (a customer's hashed
        PII lists) and for unhashable ones.
    """
    prefix = encode_basestring_ascii(key) + ":"
    known: dict[Any, str | None] = {}
    fragments: list[str | None] = []
    unencodable: list[int] = []
    for row, value in enumerate(values):
        if value is None:
            fragments.append(None)
            continue
        # By value, except floats (0.0 and -0.0 are equal keys) and shared objects; ids stay unique while
        # the values list holds them.
        memo_key: Any = id(value) if by_identity or type(value) is float else (type(value), value)
        try:
            fragment = known.get(memo_key, "")
        except TypeError:  # an unhashable value (a list, an object): by identity
            memo_key = id(value)
            fragment = known.get(memo_key, "")
        if fragment == "":
            try:
                fragment = prefix + write(value)
            except ValueError:
                fragment = None
            known[memo_key] = fragment
        if fragment is None:
            unencodable.append(row)
        fragments.append(fragment)
    return Fragments(fragments, unencodable)


def text_fragments(key: str, values: Sequence[str | None]) -> Fragments:
    """
    Fragments of a text field (event ids, names, URLs), mostly distinct: plain text is quoted by Arrow, any
    other (a quote, a backslash, non-ASCII) is escaped by the JSON encoder.
    """
    try:
        texts = pa.array(values, pa.string())
    except (pa.ArrowException, UnicodeEncodeError):  # a lone surrogate: Arrow holds UTF-8 only
        return _text_fragments_one_by_one(key, values)
    escaped = np.asarray(pc.invert(pc.fill_null(pc.match_substring_regex(texts, _PLAIN_JSON_STRING), True)))
    if escaped.any():
        rows = np.flatnonzero(escaped).tolist()
        # Between the quotes the fragment's own: the escaped text without its quotes.
        written = pa.array([encode_basestring_ascii(cast(str, values[row]))[1:-1] for row in rows], pa.string())
        texts = pc.replace_with_mask(texts, pa.array(escaped), written)
    return Fragments(texts, [], encode_basestring_ascii(key) + ':"', '"')


def constant_fragments(key: str, value: str | None, rows: int) -> Fragments:
    """Fragments of a text field with one value on every row (an operator argument standing in for a column)."""
    if value is None:
        return Fragments(pa.nulls(rows, pa.string()), [])
    try:
        fragment = encode_basestring_ascii(key) + ":" + json_value(value)
    except ValueError:  # a lone surrogate: no row can be written
        return Fragments(pa.nulls(rows, pa.string()), list(range(rows)))
    return Fragments(pa.repeat(pa.scalar(fragment, pa.string()), rows), [])


def _text_fragments_one_by_one(key: str, values: Sequence[str | None]) -> Fragments:
    prefix = encode_basestring_ascii(key) + ":"
    fragments: list[str | None] = []
    unencodable: list[int] = []
    for row, value in enumerate(values):
        if value is None:
            fragments.append(None)
            continue
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate
                unencodable.append(row)
                fragments.append(None)
                continue
        fragments.append(prefix + encode_basestring_ascii(value))
    return Fragments(fragments, unencodable)


class JsonNumbers(Sequence[int | float | None]):
    """
    A column of JSON numbers held as float64, for Arrow to write without a Python number per row.

    :param numbers: each row's number, NaN where it has none.
    :param whole: the rows written as integers (``42``, not ``42.0``).
    :param exact: rows whose integer float64 cannot hold (from 2**53), as Python ints, every digit.

    Indexing gives each row's value as a list of Python numbers would hold it.
    """

    def __init__(self, numbers: np.ndarray, whole: np.ndarray, exact: dict[int, int] | None = None) -> None:
        self.numbers = numbers
        self.whole = whole
        self.exact = exact if exact is not None else {}

    def __len__(self) -> int:
        return len(self.numbers)

    def __getitem__(self, row: Any) -> Any:
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        if row in self.exact:
            return self.exact[row]
        number = float(self.numbers[row])
        if math.isnan(number):
            return None
        return int(number) if self.whole[row] else number


def value_fragments(key: str, values: Sequence[Any], *, by_identity: bool = False) -> Fragments:
    """
    Fragments of a field of any JSON value (numbers, lists, objects): a field of text only or of plain
    numbers only (amounts, order ids, currencies) is written by Arrow, any other one value by value."""
    if isinstance(values, JsonNumbers):
        numbers = pa.array(values.numbers, pa.float64(), mask=np.isnan(values.numbers))
        by_python = np.zeros(len(values), dtype=bool)
        by_python[list(values.exact)] = True
        return _written_numbers(key, numbers, values.whole, values, True, by_python)
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if not kinds:
        return Fragments(pa.nulls(len(values), pa.string()), [])
    if kinds <= _NUMBER_KINDS:
        numbers = _number_fragments(key, values, kinds)
        if numbers is not None:
            return numbers
    elif kinds == {str}:
        return text_fragments(key, values)
    return fragments_of(key, values, json_value, by_identity=by_identity)


_NUMBER_KINDS = frozenset({int, float})
#: A float as Python writes it in positional notation, from 1e-4 up to 1e16: Arrow writes the same shortest
#: digits there, but whole floats without ".0", and small or large ones in another exponent form.
_POSITIONAL_FLOAT = r"^[0-9]+\.[0-9]+$"
_SMALLEST_POSITIONAL_FLOAT = 1e-4


def _number_fragments(key: str, values: Sequence[Any], kinds: set[type]) -> Fragments | None:
    """
    Fragments of ints and floats (``None`` where absent) written by Arrow, each as :func:`json_value`
    writes it; rows Arrow writes otherwise are written by Python. ``None`` for an int float64 cannot hold.
    """
    try:
        numbers = pa.array(values, pa.float64())
    except pa.ArrowInvalid:  # an int beyond 2**53
        return None
    # Every row that is not a float is an int or None (null either way).
    is_int = ~np.fromiter(map(float.__instancecheck__, values), dtype=bool, count=len(values)) if int in kinds else None
    return _written_numbers(key, numbers, is_int, values, float in kinds, np.zeros(len(values), dtype=bool))


def _written_numbers(
    key: str, numbers: pa.Array, is_int: np.ndarray | None, values: Sequence[Any], floats: bool, by_python: np.ndarray
) -> Fragments:
    """
    Fragments of ``numbers`` (float64, null where absent): integers where ``is_int``, other rows as floats in
    Python's shortest form, where Arrow writes them as Python does; the rest, and the rows ``by_python`` says,
    written from ``values`` by Python.
    """
    texts = pc.cast(numbers, pa.string())
    unlike_python = np.zeros(len(values), dtype=bool)
    if floats:
        positional = pc.and_(
            pc.match_substring_regex(texts, _POSITIONAL_FLOAT),
            pc.greater_equal(pc.abs(numbers), _SMALLEST_POSITIONAL_FLOAT),
        )
        unlike_python = np.asarray(pc.invert(pc.fill_null(positional, True)))
    if is_int is not None:
        # Unsafe: the floats' truncations are thrown away by the if_else.
        whole = pc.cast(pc.cast(numbers, pa.int64(), safe=False), pa.string())
        texts = pc.if_else(pa.array(is_int), whole, texts)
        unlike_python &= ~is_int
    by_python = by_python | unlike_python
    prefix = encode_basestring_ascii(key) + ":"
    unencodable: list[int] = []
    if by_python.any():
        rows = np.flatnonzero(by_python).tolist()
        written: list[str | None] = []
        for row in rows:
            try:
                written.append(json_value(values[row]))
            except ValueError:  # NaN, an infinity: JSON has no such number
                written.append(None)
                unencodable.append(row)
        texts = pc.replace_with_mask(texts, pa.array(by_python), pa.array(written, pa.string()))
    return Fragments(texts, unencodable, prefix)


def written_fragments(key: str, texts: pa.Array, unwritable_rows: list[int]) -> Fragments:
    """
    Fragments of a field whose values were written as JSON already (``texts``, null where absent), such as the
    hashed match keys, written once per distinct value: joined to the key by Arrow.

    :param unwritable_rows: the rows with a value that could not be written (a lone surrogate in an external id).
    """
    return Fragments(texts, unwritable_rows, encode_basestring_ascii(key) + ":")


def object_fragments(key: str, objects: Sequence[str | None] | pa.Array) -> Fragments:
    """Fragments of a field whose values are already JSON objects (``user_data``, ``custom_data``)."""
    return Fragments(_arrow(objects), [], encode_basestring_ascii(key) + ":")


def joined_objects(columns: Sequence[Fragments], rows: int) -> pa.Array:
    """
    Each row's object of the given fragment columns (given in key order): ``{...}``, or null where the row
    has none of the fields.
    """
    if not columns or not rows:
        return pa.nulls(rows, pa.string())
    # One join writes every event: each field as ",<prefix>" + value + suffix, the literals null where the value
    # is, then "}" (never null, so that no row has only nulls: pyarrow's join with null_handling="skip" drops such a
    # row from its result (26.0.1), which would shift every later event onto another row's id). A row's first byte,
    # the comma before its first field, becomes "{" in the buffer itself.
    elements: list[pa.Array | str] = []
    for column in columns:
        values = _arrow(column.fragments)
        elements += [_beside(values, "," + column.prefix), values]
        if column.suffix:
            elements.append(_beside(values, column.suffix))
    closed = pc.binary_join_element_wise(*elements, "}", "", null_handling="skip")
    if len(closed) != rows or closed.offset or closed.null_count:
        raise AssertionError(f"joining fragments gave {len(closed)} objects for {rows} rows")
    _, offsets_buffer, data_buffer = closed.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=rows + 1)
    present = np.diff(offsets) > 1
    # The join's own buffer is written in place (nothing else holds it), not copied with every event's bytes.
    if data_buffer.is_mutable and not memoryview(data_buffer).readonly:
        np.frombuffer(memoryview(data_buffer), dtype=np.uint8)[offsets[:-1][present]] = ord("{")
    else:
        data = np.frombuffer(data_buffer, dtype=np.uint8, count=int(offsets[-1])).copy()
        data[offsets[:-1][present]] = ord("{")
        data_buffer = pa.py_buffer(data)
    validity = None if present.all() else pa.array(present).buffers()[1]
    return pa.Array.from_buffers(pa.string(), rows, [validity, offsets_buffer, data_buffer])


def _beside(values: pa.Array, text: str) -> pa.Array | str:
    """``text`` (not empty) on every row where ``values`` has one, null elsewhere: a scalar when no row is null."""
    if not values.null_count:
        return text
    data = text.encode("ascii") * len(values)
    if len(data) >= 2**31:  # beyond a string array's 32-bit offsets
        return pc.if_else(values.is_valid(), text, pa.scalar(None, pa.string()))
    offsets = np.arange(0, len(data) + 1, len(text), dtype=np.int32)
    validity = values.is_valid().buffers()[1]
    return pa.Array.from_buffers(pa.string(), len(values), [validity, pa.py_buffer(offsets), pa.py_buffer(data)])


def _arrow(fragments: Sequence[str | None] | pa.Array) -> pa.Array:
    """Fragments as an Arrow array; they are ASCII JSON, which Arrow always holds."""
    return fragments if isinstance(fragments, pa.Array) else pa.array(fragments, pa.string())


def unencodable_rows(columns: Sequence[Fragments]) -> set[int]:
    """Return the rows of which some fragment could not be written."""
    rows: set[int] = set()
    for column in columns:
        rows.update(column.unencodable)
    return rows
