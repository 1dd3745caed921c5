"""
Turn a chunk's user columns into the hashed ``user_data`` fields sent to Gravity.

Each distinct cell is normalized and hashed once; its result is kept in a :class:`PiiCache` that the
chunks of a run share, so a repeat customer costs one dictionary lookup per field, done in C.
Nothing returned holds plaintext: only SHA-256 digests, external ids and drop counters.
"""

from __future__ import annotations

import binascii
import gc
import hashlib
import json
import re
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from itertools import repeat
from typing import Any, NamedTuple, cast

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_gravity.conversions.canonical_json import json_value
from airflow_provider_gravity.conversions.cells import (
    LIST_TYPES,
    UnreadableCell,
    arrow_text,
    cell_text,
    hashable_cell,
    split_cell,
)
from airflow_provider_gravity.conversions.pii.emails import normalize_email_text
from airflow_provider_gravity.conversions.pii.hashing import hash_text
from airflow_provider_gravity.conversions.pii.names import normalize_name_text
from airflow_provider_gravity.conversions.pii.phones import PhoneNormalizer, phone_text

USER_FIELDS = ("em", "ph", "fn", "ln", "external_id")
#: The reason a value is dropped because it is not a valid email, phone, name or country, by column.
INVALID_DROP_REASONS = {
    "em": "invalid_email",
    "ph": "invalid_phone",
    "fn": "empty_first_name",
    "ln": "empty_last_name",
    "country": "invalid_country",
}
#: The reason a value is dropped because no rule can read it as text (a dict, bytes that are not UTF-8,
#: a nested list, an infinite number), by column.
UNREADABLE_DROP_REASONS = {name: f"unreadable_{name}" for name in (*USER_FIELDS, "country")}
DROP_REASONS = (*INVALID_DROP_REASONS.values(), *UNREADABLE_DROP_REASONS.values())

# What one distinct cell gives: the value sent (a list of strings, a digest, a region, or None), how many
# present values were invalid, and how many could not be read.
_CellResult = tuple[Any, int, int]
# Text that is its own JSON string body: printable ASCII without a quote or a backslash.
_PLAIN_JSON_TEXT = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_MISSING: _CellResult = (None, 0, 0)
_DROPPED: _CellResult = (None, 1, 0)
_UNREADABLE: _CellResult = (None, 0, 1)
# What one element gives: kept text, None for missing, False for invalid, _UNREADABLE_ELEMENT.
_UNREADABLE_ELEMENT = object()


@dataclass
class HashedUserFields:
    """
    The ``user_data`` match keys of one chunk, aligned with its rows.

    :ivar texts: for each user column present, each row's value as JSON text (null where absent), in Arrow: what
        the event encoder joins. ``em``, ``ph`` and ``external_id`` values are lists of strings (digests, or
        plain external ids); ``fn`` and ``ln`` values a digest.
    :ivar drops: how many present values were dropped, by reason (see :data:`DROP_REASONS`).
    :ivar unwritable: for each column, the rows whose value has no JSON text (an external id with a lone
        surrogate), with that value: the encoder names them ``unencodable``.
    """

    # Out of the repr: external ids are sent as they are, and a repr can end up in a log line.
    texts: dict[str, pa.Array] = field(default_factory=dict, compare=False, repr=False)
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    unwritable: dict[str, dict[int, Any]] = field(default_factory=dict, repr=False)

    @cached_property
    def fields(self) -> dict[str, list[Any]]:
        """
        Each column's values as Python objects, one per row (``None`` where absent), read back from the texts:
        for tests, previews and the rare rows whose pixel object is merged, not for the hot path."""
        return {name: self._values(name) for name in self.texts}

    def value(self, name: str, row: int) -> Any:
        """Return one row's value of column ``name`` (``None`` where absent)."""
        unwritable = self.unwritable.get(name, {})
        if row in unwritable:
            return unwritable[row]
        text = self.texts[name][row].as_py()
        return None if text is None else json.loads(text)

    def _values(self, name: str) -> list[Any]:
        values = [None if text is None else json.loads(text) for text in self.texts[name].to_pylist()]
        for row, value in self.unwritable.get(name, {}).items():
            values[row] = value
        return values


class _ResultTable:
    """Results of distinct cells in arrays, found by key, so rows are resolved with numpy takes."""

    def __init__(self) -> None:
        self.positions: dict[Hashable, int] = {}
        self.values = np.empty(1024, dtype=object)
        self.texts = np.empty(1024, dtype=object)
        self.invalid = np.zeros(1024, dtype=np.int64)
        self.unreadable = np.zeros(1024, dtype=np.int64)
        self.size = 0

    def add(self, key: Hashable, result: _CellResult, keep: bool) -> int:
        """Store a result and return its position; ``keep`` registers the key for later lookups."""
        if self.size == len(self.values):  # only the entries below size are ever read
            wanted = self.size + 1
            self.values, self.texts = _room(self.values, wanted), _room(self.texts, wanted)
            self.invalid, self.unreadable = _room(self.invalid, wanted), _room(self.unreadable, wanted)
        position = self.size
        self.values[position], self.invalid[position], self.unreadable[position] = result
        self.texts[position] = None if result[0] is None else _json_text(result[0])
        self.size += 1
        if keep:
            self.positions[key] = position
        return position


class _PhoneTable:
    """
    The run's results of distinct keys (a region and a phone string), kept compact: no Python object an entry. A
    parsed, hashed phone is kept as its 32 digest bytes beside its key's bytes and hash, in arrays (about 70 bytes
    an entry with a phone of 14 characters, where a dict of ``str`` held 190), an invalid phone as its kind alone,
    the few other results (a blank cell, several phones) as they are. A key is found by its hash (a sorted array,
    searched in C) and confirmed on its bytes, so two keys whose hashes collide are both kept. One table serves
    every region: a chunk's phones are looked up in one pass, not one pass a region. When the run's tables
    together hold their ``budget``, they are all emptied.
    """

    def __init__(self, budget: _EntryBudget) -> None:
        self.budget = budget
        self.clear()
        budget.tables.append(self)

    def __len__(self) -> int:
        return self._size

    def clear(self) -> None:
        """Forget every entry."""
        self._size = 0
        self._hashes = np.empty(0, dtype=np.int64)  # sorted; _entries[i] is the entry of _hashes[i]
        self._entries = np.empty(0, dtype=np.int64)
        self._key_ends = np.zeros(1, dtype=np.int64)  # entry i's key is _key_bytes[_key_ends[i]:_key_ends[i + 1]]
        self._key_bytes = np.empty(0, dtype=np.uint8)
        self._digests = np.empty((0, 32), dtype=np.uint8)
        self._kinds = np.empty(0, dtype=np.int8)  # what each entry is: _DIGEST, _INVALID_PHONE or _OTHER_RESULT
        self._others: dict[int, _CellResult] = {}

    def results(
        self, keys: pa.Array, hashes: np.ndarray, compute: Callable[[list[int]], list[_CellResult | bytes]]
    ) -> _FieldResult:
        """
        Return the results of distinct ``keys`` (see :func:`_results_of_distinct`), each computed on its first
        sight in the run.

        :param keys: the keys' bytes (``large_binary``), all distinct.
        :param hashes: a hash of each key: equal keys must have equal hashes.
        :param compute: the results of the keys at the positions given, those the table does not hold: each
            one hashed phone as its 32 digest bytes, any other result as it is.
        """
        count = len(keys)
        entries = self._find(hashes, keys)
        found = np.flatnonzero(entries >= 0)
        kinds = self._kinds[entries[found]]
        found_digests, found_others = found[kinds == _DIGEST], found[kinds == _OTHER_RESULT]
        invalid = np.zeros(count + 1, dtype=np.int64)
        unreadable = np.zeros(count + 1, dtype=np.int64)
        invalid[found[kinds == _INVALID_PHONE]] = 1
        new = np.flatnonzero(entries < 0)
        new_positions = new.tolist()
        computed = compute(new_positions) if new_positions else []  # before storing: storing may clear
        others = {
            position: self._others[entry]
            for position, entry in zip(found_others.tolist(), entries[found_others].tolist(), strict=True)
        }
        stored_digests: list[bytes | None] = []
        new_digest_positions: list[int] = []
        new_results: list[_CellResult] = []
        new_kinds = np.empty(len(new_positions), dtype=np.int8)
        for offset, (position, result) in enumerate(zip(new_positions, computed, strict=True)):
            single = result if type(result) is bytes else _single_digest(cast(_CellResult, result))
            if single is not None:
                new_digest_positions.append(position)
                new_results.append(_MISSING)  # not kept: the entry is its digest
                new_kinds[offset] = _DIGEST
            elif result == _DROPPED:
                invalid[position] = 1
                new_results.append(_DROPPED)
                new_kinds[offset] = _INVALID_PHONE
            else:
                others[position] = cast(_CellResult, result)
                new_results.append(cast(_CellResult, result))
                new_kinds[offset] = _OTHER_RESULT
            stored_digests.append(single)
        known_digests = np.take(self._digests, entries[found_digests], axis=0).tobytes()
        self._store(hashes[new], keys.take(pa.array(new, pa.int64())), new_results, stored_digests, new_kinds)
        new_digests = b"".join(digest for digest in stored_digests if digest is not None)
        other_positions = np.fromiter(others, dtype=np.int64, count=len(others))
        other_texts: list[str | None] = []
        for position, (value, dropped, unread) in others.items():
            other_texts.append(None if value is None else _json_text(value))
            invalid[position], unreadable[position] = dropped, unread
        texts = _entry_texts(
            count + 1,
            [
                (found_digests, _digest_list_texts(known_digests)),
                (np.asarray(new_digest_positions, dtype=np.int64), _digest_list_texts(new_digests)),
                (other_positions, pa.array(other_texts, pa.string())),
            ],
        )
        return _FieldResult(texts, int(invalid.sum()), int(unreadable.sum()), invalid, unreadable)

    def _find(self, hashes: np.ndarray, keys: pa.Array) -> np.ndarray:
        """Return the entry of each key, or -1: found by hash, confirmed on the key's bytes."""
        entries = np.full(len(hashes), -1, dtype=np.int64)
        if not self._size or not len(hashes):
            return entries
        # Searched in order: numpy narrows each search from the last, which more than pays for the sort (a chunk's
        # 10,000 hashes in a table of 150,000: 1.3 ms for both searches, 3.6 ms unsorted).
        order = np.argsort(hashes)
        wanted = hashes[order]
        starts = np.searchsorted(self._hashes, wanted, side="left")
        # The table's hash at each start and after it tell the count, 0, 1 or more; the right edge is searched for
        # the rare hashes held more than once only.
        last = len(self._hashes) - 1
        held = self._hashes[np.minimum(starts, last)] == wanted
        twice = held & (starts < last) & (self._hashes[np.minimum(starts + 1, last)] == wanted)
        sorted_counts = held.astype(np.int64)
        if twice.any():
            sorted_counts[twice] = np.searchsorted(self._hashes, wanted[twice], side="right") - starts[twice]
        left, counts = np.empty_like(starts), np.empty_like(starts)
        left[order], counts[order] = starts, sorted_counts
        once = np.flatnonzero(counts == 1)
        candidates = self._entries[left[once]]
        wanted_keys = keys if len(once) == len(keys) else keys.take(pa.array(once, pa.int64()))
        same = pc.equal(self._keys().take(pa.array(candidates)), wanted_keys)
        confirmed = np.asarray(same.to_numpy(zero_copy_only=False), dtype=bool)
        entries[once[confirmed]] = candidates[confirmed]
        for position in np.flatnonzero(counts > 1).tolist():  # two strings of one hash: each compared
            wanted = keys[position].as_py()
            start = int(left[position])
            for entry in self._entries[start : start + int(counts[position])].tolist():
                if self._key_bytes[self._key_ends[entry] : self._key_ends[entry + 1]].tobytes() == wanted:
                    entries[position] = entry
                    break
        return entries

    def _keys(self) -> pa.Array:
        """Return the entries' keys as one Arrow array over the table's own buffers (no copy)."""
        ends = self._key_ends[: self._size + 1]
        data = self._key_bytes[: int(ends[-1])]
        return pa.Array.from_buffers(pa.large_binary(), self._size, [None, pa.py_buffer(ends), pa.py_buffer(data)])

    def _store(
        self,
        hashes: np.ndarray,
        keys: pa.Array,
        results: list[_CellResult],
        digests: list[bytes | None],
        kinds: np.ndarray,
    ) -> None:
        """Keep new entries, within the run's budget (which may empty every table, this one too, first)."""
        if not results:
            return
        key_ends, key_bytes = _binary_buffers(keys)
        start = 0
        while start < len(results):
            stop = start + self.budget.take(len(results) - start)
            self._append(
                hashes[start:stop],
                key_ends[start : stop + 1],
                key_bytes,
                results[start:stop],
                digests[start:stop],
                kinds[start:stop],
            )
            start = stop

    def _append(
        self,
        hashes: np.ndarray,
        key_ends: np.ndarray,
        key_bytes: np.ndarray,
        results: list[_CellResult],
        digests: list[bytes | None],
        kinds: np.ndarray,
    ) -> None:
        first, added = self._size, len(results)
        size = first + added
        used = int(self._key_ends[first])
        lengths = np.diff(key_ends)
        self._key_ends = _room(self._key_ends, size + 1)
        self._key_ends[first + 1 : size + 1] = used + np.cumsum(lengths)
        self._key_bytes = _room(self._key_bytes, used + int(lengths.sum()))
        self._key_bytes[used : used + int(lengths.sum())] = key_bytes[key_ends[0] : key_ends[-1]]
        self._digests = _room(self._digests, size)
        self._kinds = _room(self._kinds, size)
        self._kinds[first:size] = kinds
        plain = [digest for digest in digests if digest is not None]
        if plain:
            raw = np.frombuffer(b"".join(plain), dtype=np.uint8).reshape(-1, 32)
            self._digests[first:size][kinds == _DIGEST] = raw
        for offset in np.flatnonzero(kinds == _OTHER_RESULT).tolist():
            self._others[first + offset] = results[offset]
        order = np.argsort(hashes, kind="stable")
        at = np.searchsorted(self._hashes, hashes[order], side="right")
        self._hashes = np.insert(self._hashes, at, hashes[order])
        self._entries = np.insert(self._entries, at, np.arange(first, size, dtype=np.int64)[order])
        self._size = size


_LOWER_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
# What a phone table entry holds: one digest (in the digests array), an invalid phone (one drop, no value; about
# one phone in fifteen on the benchmark's rows), or any other result (kept as it is, in a dict).
_DIGEST, _INVALID_PHONE, _OTHER_RESULT = 0, 1, 2


def _single_digest(result: _CellResult) -> bytes | None:
    """Return the digest bytes of a result that is one hashed phone (kept as its bytes), else None (kept as it is)."""
    value = result[0]
    if result[1:] == (0, 0) and type(value) is list and len(value) == 1 and type(value[0]) is str:
        digest: str = value[0]
        if _LOWER_HEX_DIGEST.fullmatch(digest):
            return bytes.fromhex(digest)
    return None


def _utf8_keys(strings: list[str]) -> pa.Array:
    """Return the strings' UTF-8 bytes in Arrow (lone surrogates kept as they are: distinct strings stay apart)."""
    try:
        return pa.array(strings, pa.large_string()).cast(pa.large_binary())
    except (pa.ArrowException, UnicodeEncodeError):
        return pa.array([text.encode("utf-8", "surrogatepass") for text in strings], pa.large_binary())


def _binary_buffers(keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Return a ``large_binary`` array's value ends (``len + 1`` of them) and its bytes."""
    _, ends_buffer, data_buffer = keys.buffers()
    ends = np.frombuffer(ends_buffer, dtype=np.int64)[keys.offset : keys.offset + len(keys) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.empty(0, dtype=np.uint8)
    return ends, data


def _room(array: np.ndarray, size: int) -> np.ndarray:
    """``array``, or a copy at least twice as long when it holds fewer than ``size`` items."""
    if len(array) >= size:
        return array
    grown = np.empty((max(size, 2 * len(array), 64), *array.shape[1:]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown


class _EntryBudget:
    """The entries the phone tables of a run may hold together."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.used = 0
        self.tables: list[_PhoneTable] = []

    def take(self, wanted: int) -> int:
        """
        Count up to ``wanted`` new entries and return how many: every table is emptied first when they hold
        ``max_entries`` already (at least one entry is kept even with a budget of none)."""
        if self.used >= self.max_entries:
            for table in self.tables:
                table.clear()
            self.used = 0
        taken = min(wanted, max(self.max_entries - self.used, 1))
        self.used += taken
        return taken


class PiiCache:
    """
    Results of the run's distinct phone strings, shared by its chunks so repeat customers cost a lookup.

    Phones are kept because parsing one costs microseconds; emails, names and ids are normalized again in
    each chunk, once per distinct value, which costs less than remembering them. It lives in the worker's
    memory only (its keys are the raw cells) and is never logged or returned; create one per run and drop
    it at the end.

    :param max_entries: the most distinct phones kept, all regions together; when full, all are forgotten.
    """

    def __init__(self, max_entries: int = 250_000) -> None:
        self.max_entries = max_entries
        self._budget = _EntryBudget(max_entries)
        self._tables: dict[Hashable, _PhoneTable] = {}

    @property
    def entries(self) -> int:
        """The phones remembered now, all regions together."""
        return sum(map(len, self._tables.values()))

    def phones(self, name: Hashable) -> _PhoneTable:
        """Return the table of one set of phone options (its keys name the region)."""
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = _PhoneTable(self._budget)
        return table


@contextmanager
def garbage_collection_paused() -> Iterator[None]:
    """
    Pause the cyclic garbage collector while a chunk is processed.

    Each new customer allocates a few small lists and tuples; with a large cache alive, the
    collections these allocations trigger rescan it again and again (about a fifth of the run time in
    the benchmark). Nothing here creates reference cycles, so pausing frees nothing later than it would.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _is_cacheable(cell: Hashable) -> bool:
    """
    Whether a result may be stored with ``cell`` as its dict key.

    1, 1.0 and True are the same key but not the same text, so bools and numbers equal to 0 or 1 are
    left out (recomputed each time), as are types whose equality we do not control.
    """
    kind = type(cell)
    if kind is str or cell is None:
        return True
    if kind is int or kind is float:
        return cell != 0 and cell != 1
    if kind is tuple:
        return all(map(_is_cacheable, cast("tuple[Hashable, ...]", cell)))
    return False


def _is_plain_scalar(cell: Any) -> bool:
    if type(cell) is str:
        return "[" not in cell
    return not isinstance(cell, (*LIST_TYPES, str))


def _list_result(cell: Any, element_value: Callable[[Any], Any]) -> _CellResult:
    """Apply ``element_value`` (kept string, None for missing, False for invalid, unreadable) to each element."""
    if _is_plain_scalar(cell):  # the common case: one value
        value = element_value(cell)
        if value is None:
            return _MISSING
        if value is _UNREADABLE_ELEMENT:
            return _UNREADABLE
        return _DROPPED if value is False else ([value], 0, 0)
    kept: dict[str, None] = {}
    invalid = unreadable = 0
    for element in split_cell(cell):
        value = element_value(element)
        if value is False:
            invalid += 1
        elif value is _UNREADABLE_ELEMENT:
            unreadable += 1
        elif value is not None:
            kept[value] = None
    return (list(kept) if kept else None), invalid, unreadable


def _element_text(element: Any) -> str | None | object:
    """One element as text; lists and dicts nested in a list cell are unreadable, never their ``repr``."""
    if type(element) is str:
        return element.strip() or None
    try:
        return cell_text(element)
    except UnreadableCell:
        return _UNREADABLE_ELEMENT


def _email_value(element: Any) -> str | None | bool | object:
    text = _element_text(element)
    if text is None or text is _UNREADABLE_ELEMENT:
        return text
    normalized = normalize_email_text(cast(str, text))
    return False if normalized is None else hash_text(normalized)


def _email_result(cell: Any) -> _CellResult:
    if type(cell) is str and "[" not in cell:  # inlined common case: this runs once per new customer
        text = cell.strip()
        if not text:
            return _MISSING
        normalized = normalize_email_text(text)
        return _DROPPED if normalized is None else ([hash_text(normalized)], 0, 0)
    return _list_result(cell, _email_value)


def _external_id_result(cell: Any) -> _CellResult:
    if type(cell) is int and cell.bit_length() < 64:
        return [str(cell)], 0, 0
    return _list_result(cell, _element_text)


def _name_result(cell: Any) -> _CellResult:
    text = _element_text(cell)
    if text is None:
        return _MISSING
    if text is _UNREADABLE_ELEMENT:
        return _UNREADABLE
    normalized = normalize_name_text(cast(str, text))
    return _DROPPED if normalized is None else (hash_text(normalized), 0, 0)


def _country_result(cell: Any) -> _CellResult:
    """Return the region a ``country`` cell names, or None (with one drop when a value was there but unknown)."""
    text = _element_text(cell)
    if text is None:
        return _MISSING
    if text is _UNREADABLE_ELEMENT:
        return _UNREADABLE
    country = cast(str, text).upper()
    if country in phonenumbers.SUPPORTED_REGIONS:
        return country, 0, 0
    return _DROPPED


def _phone_result(normalizer: PhoneNormalizer, with_plus: bool, region: str) -> Callable[[Any], _CellResult]:
    normalize = normalizer.normalize_text
    skip = 0 if with_plus else 1

    def value(element: Any) -> str | None | bool | object:
        text: str | None
        if type(element) is str:
            text = element
        else:
            try:
                text = phone_text(element)
            except UnreadableCell:
                return _UNREADABLE_ELEMENT
        if text is None or not text.strip():
            return None
        e164 = normalize(text, region)
        if e164 is None:
            return False
        return hash_text(e164[skip:] if e164.startswith("+") else e164)

    def result(cell: Any) -> _CellResult:
        if type(cell) is str and "[" not in cell:  # inlined common case
            kept = value(cell)
            if kept is None:
                return _MISSING
            return _DROPPED if kept is False else ([kept], 0, 0)
        return _list_result(cell, value)

    return result


class _FieldResult(NamedTuple):
    """
    One column's results, per distinct cell (with a last entry for the missing cell) or per row.

    :param texts: each entry's value as JSON text, null where it has none, in Arrow.
    :param invalid: present values dropped as invalid, over all rows.
    :param unreadable: values no rule could read as text, over all rows.
    :param invalid_each: per entry, for results of distinct cells (see :func:`_spread`); ``None`` for rows.
    :param unreadable_each: likewise.
    :param unwritable: the entries whose value has no JSON text (a lone surrogate), with that value.
    :param values: each entry's value, only where the caller needs Python objects (``country``).
    """

    texts: pa.Array
    invalid: int
    unreadable: int
    invalid_each: np.ndarray | None = None
    unreadable_each: np.ndarray | None = None
    unwritable: dict[int, Any] = {}  # noqa: RUF012 - never mutated: each result gets its own dict
    values: np.ndarray | None = None


def _json_text(value: Any) -> str | None:
    try:
        return json_value(value)
    except ValueError:  # a lone surrogate in an external id: the encoder finds it again and names the row
        return None


def _unwritable(values: Iterator[Any], texts: list[str | None]) -> dict[int, Any]:
    """Return the positions of values present whose text could not be written, with the values."""
    return {
        position: value
        for position, (value, text) in enumerate(zip(values, texts, strict=True))
        if text is None and value is not None
    }


def _resolve_rows(keys: list[Any], table: _ResultTable, compute: Callable[[Any], _CellResult]) -> _FieldResult:
    """
    Each row's result, for a column that is not text (numbers, lists, objects).

    Known keys are found in C; each key not yet in the table is computed once.
    """
    try:
        positions = np.fromiter(map(table.positions.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
    except TypeError:  # list cells (lists, arrays) and dicts are not hashable
        keys = [hashable_cell(key) for key in keys]
        positions = np.fromiter(map(table.positions.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
    missing = np.flatnonzero(positions < 0)
    if len(missing):
        missing_keys = [keys[row] for row in missing.tolist()]
        new_positions = {
            key: table.add(key, compute(key), type(key) is str or _is_cacheable(key))
            for key in dict.fromkeys(missing_keys)
        }
        positions[missing] = np.fromiter(
            map(new_positions.__getitem__, missing_keys), dtype=np.int64, count=len(missing_keys)
        )
    values = table.values[positions]
    texts = table.texts[positions].tolist()
    return _FieldResult(
        pa.array(texts, pa.string()),
        int(table.invalid[positions].sum()),
        int(table.unreadable[positions].sum()),
        unwritable=_unwritable(iter(values.tolist()), texts),
        values=values,
    )


def _is_text_column(series: pd.Series) -> bool:
    """Whether every cell of ``series`` is a string or missing: a column pandas holds as text."""
    return isinstance(series.dtype, pd.StringDtype)


def _results_of_distinct(results: list[_CellResult], texts: list[str | None] | None = None) -> _FieldResult:
    """
    Build the per-entry results of distinct cells, with one more entry for the missing cell.

    :param texts: each value's JSON text when the caller wrote them already; else written here.
    """
    count = len(results)
    values = np.empty(count + 1, dtype=object)
    values[:count] = _objects((value for value, _, _ in results), count)
    if texts is None:
        texts = [None if value is None else _list_text(value) for value, _, _ in results]
    invalid = np.zeros(count + 1, dtype=np.int64)
    unreadable = np.zeros(count + 1, dtype=np.int64)
    invalid[:count] = np.fromiter((dropped for _, dropped, _ in results), dtype=np.int64, count=count)
    unreadable[:count] = np.fromiter((unread for _, _, unread in results), dtype=np.int64, count=count)
    return _FieldResult(
        pa.array([*texts, None], pa.string()),
        int(invalid.sum()),
        int(unreadable.sum()),
        invalid,
        unreadable,
        _unwritable((value for value, _, _ in results), texts),
        values,
    )


def _objects(items: Iterator[Any], count: int) -> np.ndarray:
    """Build an object array of ``items``, each kept as it is (``np.array`` would make lists of lists a 2-D array)."""
    return np.fromiter(items, dtype=object, count=count)


def _list_text(value: Any) -> str | None:
    """:func:`_json_text`, faster for the common value: a list of one digest or one plain id."""
    if type(value) is list and len(value) == 1 and type(value[0]) is str:
        item = value[0]
        if (item.isascii() and item.isalnum()) or _PLAIN_JSON_TEXT.fullmatch(item):
            return '["' + item + '"]'
    return _json_text(value)


def _spread(codes: np.ndarray, distinct: _FieldResult) -> _FieldResult:
    """Rows' results from their codes into the distinct cells' entries (-1, the missing cell, is the last)."""
    assert distinct.invalid_each is not None and distinct.unreadable_each is not None
    entries = np.where(codes < 0, len(distinct.texts) - 1, codes)
    unwritable: dict[int, Any] = {}
    if distinct.unwritable:
        for row in np.flatnonzero(np.isin(entries, list(distinct.unwritable))).tolist():
            unwritable[row] = distinct.unwritable[int(entries[row])]
    return _FieldResult(
        distinct.texts.take(pa.array(entries, pa.int64())),
        int(distinct.invalid_each[entries].sum()),
        int(distinct.unreadable_each[entries].sum()),
        unwritable=unwritable,
        values=None if distinct.values is None else distinct.values[entries],
    )


def _text_field(
    series: pd.Series,
    compute: Callable[[Any], _CellResult],
    batch: Callable[[list[str] | pa.Array], _FieldResult] | None = None,
) -> _FieldResult:
    """
    Resolve a text column per distinct cell of the chunk: factorized in C, each distinct string computed
    once (by ``batch`` over all of them when given, else one by one), the results spread back to the rows.
    """
    if batch is not None and (column := arrow_text(series)) is not None:
        # The distinct strings stay in Arrow for the batch's kernels: no Python string for each.
        encoded = pc.dictionary_encode(column)
        codes = np.asarray(pc.fill_null(encoded.indices, -1), dtype=np.int64)
        return _spread(codes, batch(encoded.dictionary))
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    distinct = uniques.tolist()
    if batch is not None:
        return _spread(codes, batch(distinct))
    return _spread(codes, _results_of_distinct([compute(value) for value in distinct]))


def _field(frame: pd.DataFrame, column: str, compute: Callable[[Any], _CellResult], batch: Any = None) -> _FieldResult:
    """One column's results for this chunk: per distinct string for a text column, else cell by cell."""
    series = frame[column]
    if _is_text_column(series):
        return _text_field(series, compute, batch)
    return _resolve_rows(series.to_numpy(dtype=object).tolist(), _ResultTable(), compute)


_LIST_OPEN = np.frombuffer(b'["', dtype=np.uint8)
_LIST_CLOSE = np.frombuffer(b'"]', dtype=np.uint8)


def _digest_list_texts(digests: bytes) -> pa.Array:
    """``["<hex>"]`` of each 32-byte SHA-256 digest in ``digests``, built in one buffer: no string per digest."""
    count = len(digests) // 32
    hexes = np.frombuffer(binascii.hexlify(digests), dtype=np.uint8).reshape(count, 64)  # bytes: no str between
    written = np.empty((count, 68), dtype=np.uint8)
    written[:, :2], written[:, 2:66], written[:, 66:] = _LIST_OPEN, hexes, _LIST_CLOSE
    offsets = np.arange(0, 68 * (count + 1), 68, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(written)])


def _sha256_list_texts(texts: pa.Array) -> pa.Array:
    """``["<hex>"]`` of the SHA-256 of each text's UTF-8 bytes (no null among them)."""
    sha256 = hashlib.sha256
    return _digest_list_texts(b"".join([sha256(data).digest() for data in texts.cast(pa.large_binary()).to_pylist()]))


def _quoted_in_list(texts: pa.Array) -> pa.Array:
    """``["<text>"]`` of each text, which must be its own JSON string body (plain ASCII, no quote or backslash)."""
    return pc.binary_join_element_wise('["', texts.cast(pa.string()), '"]', "")


def _entry_texts(count: int, parts: list[tuple[np.ndarray, pa.Array]]) -> pa.Array:
    """
    Return the texts of ``count`` entries, from parts of ``(positions, texts)``; an entry in no part is null.
    One take over the parts' texts, in C.
    """
    pieces = [texts.cast(pa.string()) for _, texts in parts if len(texts)]
    joined = pa.concat_arrays([*pieces, pa.nulls(1, pa.string())])
    where = np.full(count, len(joined) - 1, dtype=np.int64)
    start = 0
    for positions, texts in parts:
        where[positions] = np.arange(start, start + len(texts), dtype=np.int64)
        start += len(texts)
    return joined.take(pa.array(where, pa.int64()))


# Emails made only of printable ASCII, tabs and the letters of Latin-1, Latin Extended-A and Latin Extended
# Additional (Vietnamese: nearly all the rest) are trimmed, lowercased and checked by Arrow kernels. Those letters
# lowercase as Python lowercases them, one to one (a test checks each), except U+0130, which Python lowers to two
# characters; no format character or space is among them. Any other email (Greek, with its final sigma; control
# characters; a JSON array, which _email_result splits) goes through normalize_email_text.
_ARROW_EMAIL_INPUT = r"^[\t\x20-\x5a\x5c-\x7e\x{00c0}-\x{012f}\x{0131}-\x{017f}\x{1e00}-\x{1eff}]*$"
_ARROW_SHA256_HEX = r"^[0-9a-f]{64}$"
_ARROW_EMAIL = (
    r"^[^@\s\x00-\x1f\x7f]+@[^@\s.\x00-\x1f\x7f][^@\s\x00-\x1f\x7f]*\.[^@\s\x00-\x1f\x7f]*[^@\s.\x00-\x1f\x7f]$"
)


def _python_results(
    strings: list[str] | pa.Array, positions: np.ndarray, compute: Callable[[Any], _CellResult], count: int
) -> tuple[pa.Array, np.ndarray, np.ndarray, dict[int, Any]]:
    """Compute the strings at ``positions`` one by one: their texts, invalid and unreadable counts per entry."""
    invalid = np.zeros(count, dtype=np.int64)
    unreadable = np.zeros(count, dtype=np.int64)
    texts: list[str | None] = []
    unwritable: dict[int, Any] = {}
    cells = _taken(strings, positions)
    for position, cell in zip(positions.tolist(), cells, strict=True):
        value, invalid[position], unreadable[position] = compute(cell)
        text = None if value is None else _json_text(value)
        if text is None and value is not None:
            unwritable[position] = value
        texts.append(text)
    return pa.array(texts, pa.string()), invalid, unreadable, unwritable


def _taken(strings: list[str] | pa.Array, positions: np.ndarray) -> list[str]:
    if isinstance(strings, pa.Array):
        return strings.take(pa.array(positions, pa.int64())).to_pylist()  # type: ignore[no-any-return]
    return [strings[position] for position in positions.tolist()]


def _distinct_texts(strings: list[str] | pa.Array) -> pa.Array | None:
    """Return the distinct strings in Arrow, or ``None`` when Arrow cannot hold one (a lone surrogate)."""
    if isinstance(strings, pa.Array):
        return strings.cast(pa.large_string())
    try:
        return pa.array(strings, pa.large_string())
    except (pa.ArrowException, UnicodeEncodeError):
        return None


def _email_results(strings: list[str] | pa.Array) -> _FieldResult:
    """
    Return the results of distinct email strings, as :func:`_results_of_distinct` gives them: what
    :func:`_email_result` gives each, mostly from Arrow kernels.
    """
    distinct = _distinct_texts(strings)
    if distinct is None:  # a lone surrogate (a python-backed string column)
        return _results_of_distinct([_email_result(text) for text in strings])
    plain = np.asarray(pc.fill_null(pc.match_substring_regex(distinct, _ARROW_EMAIL_INPUT), False))
    lowered = pc.utf8_lower(pc.utf8_trim(distinct, characters=" \t"))
    lengths = np.asarray(pc.fill_null(pc.utf8_length(lowered), 0))
    kept = plain & (lengths > 0)
    digests = np.zeros(len(kept), dtype=bool)
    if (maybe := np.flatnonzero(kept & (lengths == 64))).size:  # only 64 characters can be a digest already
        digests[maybe] = np.asarray(pc.match_substring_regex(lowered.take(pa.array(maybe)), _ARROW_SHA256_HEX))
    valid = digests | (kept & np.asarray(pc.match_substring_regex(lowered, _ARROW_EMAIL)))
    count = len(strings) + 1
    hashed, passed, others = np.flatnonzero(valid & ~digests), np.flatnonzero(digests), np.flatnonzero(~plain)
    other_texts, invalid, unreadable, unwritable = _python_results(strings, others, _email_result, count)
    invalid[: len(strings)] += kept & ~valid
    texts = _entry_texts(
        count,
        [
            (hashed, _sha256_list_texts(lowered.take(pa.array(hashed, pa.int64())))),
            (passed, _quoted_in_list(lowered.take(pa.array(passed, pa.int64())))),
            (others, other_texts),
        ],
    )
    return _FieldResult(texts, int(invalid.sum()), int(unreadable.sum()), invalid, unreadable, unwritable)


# External ids of printable ASCII without a quote, a backslash or a "[" (a JSON array) are their own JSON text.
_ARROW_PLAIN_ID = r"^[\x20\x21\x23-\x5a\x5d-\x7e]*$"


def _external_id_results(strings: list[str] | pa.Array) -> _FieldResult:
    """
    Return the results of distinct external id strings, as :func:`_results_of_distinct` gives them; plain ids are
    trimmed and quoted by Arrow kernels, others go through :func:`_external_id_result`."""
    distinct = _distinct_texts(strings)
    if distinct is None:  # a lone surrogate (a python-backed string column)
        return _results_of_distinct([_external_id_result(text) for text in strings])
    plain = np.asarray(pc.fill_null(pc.match_substring_regex(distinct, _ARROW_PLAIN_ID), False))
    trimmed = pc.utf8_trim(distinct, characters=" ")
    kept = np.flatnonzero(plain & np.asarray(pc.greater(pc.utf8_length(trimmed), 0)))
    others = np.flatnonzero(~plain)
    count = len(strings) + 1
    other_texts, invalid, unreadable, unwritable = _python_results(strings, others, _external_id_result, count)
    texts = _entry_texts(
        count, [(kept, _quoted_in_list(trimmed.take(pa.array(kept, pa.int64())))), (others, other_texts)]
    )
    return _FieldResult(texts, int(invalid.sum()), int(unreadable.sum()), invalid, unreadable, unwritable)


def _phone_field(
    frame: pd.DataFrame, regions: np.ndarray, cache: PiiCache, normalizer: PhoneNormalizer, with_plus: bool
) -> _FieldResult:
    """
    Phones resolved region by region. A text column is resolved per distinct string of the chunk, each
    looked up in the run's table of that region (a phone costs microseconds to parse); other columns cell
    by cell.
    """
    series = frame["ph"]
    region_codes, distinct_regions = pd.factorize(regions)
    if _is_text_column(series):
        return _text_phone_field(series, region_codes, distinct_regions.tolist(), cache, normalizer, with_plus)
    cells = series.to_numpy(dtype=object)
    texts = np.empty(len(cells), dtype=object)
    unwritable: dict[int, Any] = {}
    invalid = unreadable = 0
    for code, region in enumerate(distinct_regions.tolist()):
        rows = np.arange(len(cells)) if len(distinct_regions) == 1 else np.flatnonzero(region_codes == code)
        resolved = _resolve_rows(cells[rows].tolist(), _ResultTable(), _phone_result(normalizer, with_plus, region))
        texts[rows] = resolved.texts.to_pylist()
        unwritable.update((int(rows[position]), value) for position, value in resolved.unwritable.items())
        invalid += resolved.invalid
        unreadable += resolved.unreadable
    return _FieldResult(pa.array(texts, pa.string()), invalid, unreadable, unwritable=unwritable)


def _text_phone_field(
    series: pd.Series,
    region_codes: np.ndarray,
    regions: list[str],
    cache: PiiCache,
    normalizer: PhoneNormalizer,
    with_plus: bool,
) -> _FieldResult:
    """
    Resolve a text column of phones per distinct ``(region, phone)`` pair of the chunk: the column factorized
    once, every pair looked up at once in the run's table, under the key ``region NUL phone``.
    """
    phone_codes, uniques = pd.factorize(series, use_na_sentinel=True)
    strings = np.asarray(uniques.tolist() + [None], dtype=object)  # code -1, a missing phone, is the last
    width = len(strings)
    phone_codes = np.where(phone_codes < 0, width - 1, phone_codes)
    distinct_pairs, row_pairs = np.unique(region_codes.astype(np.int64) * width + phone_codes, return_inverse=True)
    pair_regions, pair_phones = np.divmod(distinct_pairs, width)
    present = pair_phones != width - 1
    phones = strings[pair_phones[present]].tolist()
    phone_regions = pair_regions[present]
    # Equal keys need equal hashes only: a phone's hash mixed with its region's is enough, the bytes confirm.
    region_hashes = np.fromiter(map(hash, regions), dtype=np.int64, count=len(regions))
    hashes = np.fromiter(map(hash, phones), dtype=np.int64, count=len(phones)) ^ region_hashes[phone_regions]
    region_keys = pa.array(regions, pa.large_binary()).take(pa.array(phone_regions, pa.int64()))
    keys = pc.binary_join_element_wise(region_keys, _utf8_keys(phones), _KEY_SEPARATOR)
    resolvers = [_phone_result(normalizer, with_plus, region) for region in regions]
    regions_of_phones = phone_regions.tolist()

    def computed(positions: list[int]) -> list[_CellResult | bytes]:
        return _phone_digests(
            normalizer,
            with_plus,
            [phones[position] for position in positions],
            [regions_of_phones[position] for position in positions],
            regions,
            resolvers,
        )

    found = cache.phones((normalizer.backend, with_plus)).results(keys, hashes, computed)
    assert found.invalid_each is not None and found.unreadable_each is not None
    # Present phones are the first entries of what the table gives, in order; the missing one its last.
    entries = np.where(present, np.cumsum(present) - 1, len(found.texts) - 1)[row_pairs.reshape(-1)]
    return _FieldResult(
        found.texts.take(pa.array(entries, pa.int64())),
        int(found.invalid_each[entries].sum()),
        int(found.unreadable_each[entries].sum()),
    )


def _phone_digests(
    normalizer: PhoneNormalizer,
    with_plus: bool,
    phones: list[str],
    region_codes: list[int],
    regions: list[str],
    resolvers: list[Callable[[Any], _CellResult]],
) -> list[_CellResult | bytes]:
    """
    Return the results of phones first seen in the run, as ``resolvers`` give them, except that one valid phone is
    given as the 32-byte SHA-256 digest of its E.164 text, which the run's table keeps (no hex string between).

    A cell of one phone shorter than a digest, the common case, is parsed and hashed in this one loop; any other
    (a JSON array, or 64 characters or more, which may be a digest already) goes through its region's resolver.
    """
    parse = normalizer.normalize_text
    skip = 0 if with_plus else 1
    sha256 = hashlib.sha256
    results: list[_CellResult | bytes] = []
    for phone, code in zip(phones, region_codes, strict=True):
        if len(phone) >= 64 or "[" in phone:
            results.append(resolvers[code](phone))
        elif not phone.strip():
            results.append(_MISSING)
        elif (e164 := parse(phone, regions[code])) is None:
            results.append(_DROPPED)
        else:
            results.append(sha256((e164[skip:] if e164.startswith("+") else e164).encode()).digest())
    return results


# Regions are ISO codes phonenumbers knows (the default region is checked), which hold no NUL.
_KEY_SEPARATOR = pa.scalar(b"\x00", pa.large_binary())


def hash_user_fields(
    frame: pd.DataFrame,
    *,
    default_region: str = "US",
    phone_with_plus: bool = False,
    phone_backend: str = "phonenumbers",
    cache: PiiCache | None = None,
) -> HashedUserFields:
    """
    Normalize and hash the user columns of one chunk.

    Reads any of ``em``, ``ph``, ``fn``, ``ln``, ``external_id`` and ``country`` (other columns are
    ignored). ``em``, ``ph`` and ``external_id`` cells may hold one value or a list (Python list or
    tuple, numpy array, JSON array string); elements are normalized one by one and duplicates removed
    in order. Values that are already 64 hexadecimal characters are kept as digests, lowercased.

    :param frame: the chunk.
    :param default_region: phone region for rows without a valid ``country``.
    :param phone_with_plus: hash phones as ``+<digits>`` instead of the E.164 digits alone.
    :param phone_backend: ``"phonenumbers"`` (default) or ``"rphonenumbers"``.
    :param cache: results shared by the chunks of a run (see :class:`PiiCache`); pass the same one for
        every chunk. None keeps results for this chunk only.
    :return: the hashed fields, row-aligned, and the drop counters.
    """
    if default_region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"default_region must be an ISO 3166 alpha-2 region phonenumbers knows, got {default_region!r}."
        )
    return _hash_user_fields(
        frame, default_region, phone_with_plus, phone_backend, cache if cache is not None else PiiCache()
    )


def _hash_user_fields(
    frame: pd.DataFrame, default_region: str, phone_with_plus: bool, phone_backend: str, cache: PiiCache
) -> HashedUserFields:
    result = HashedUserFields()
    columns = frame.columns

    def keep(column: str, resolved: _FieldResult) -> None:
        result.texts[column] = resolved.texts
        if resolved.unwritable:
            result.unwritable[column] = resolved.unwritable
        if column in INVALID_DROP_REASONS:
            result.drops[INVALID_DROP_REASONS[column]] += resolved.invalid
        result.drops[UNREADABLE_DROP_REASONS[column]] += resolved.unreadable

    if "em" in columns:
        keep("em", _field(frame, "em", _email_result, _email_results))
    regions = np.full(len(frame), default_region, dtype=object)
    if "country" in columns:
        known = _field(frame, "country", _country_result)
        result.drops[INVALID_DROP_REASONS["country"]] += known.invalid
        result.drops[UNREADABLE_DROP_REASONS["country"]] += known.unreadable
        assert known.values is not None
        regions = np.where(np.equal(known.values, None), default_region, known.values)  # type: ignore[call-overload]
    if "ph" in columns:
        keep("ph", _phone_field(frame, regions, cache, PhoneNormalizer(phone_backend), phone_with_plus))
    for name in ("fn", "ln"):
        if name in columns:
            keep(name, _field(frame, name, _name_result))
    if "external_id" in columns:
        keep("external_id", _field(frame, "external_id", _external_id_result, _external_id_results))
    return result
