"""
Event keys seen so far in a run, for in-run dedup: exact, linear in the rows, and small in memory at any size.

Three parts:

- a **filter** in memory (a blocked Bloom filter over a 64-bit hash of each key) clears most new keys at once;
- a **key log** in a temporary file holds every distinct key in full, so that a key the filter cannot clear
  is confirmed or refuted on the key itself: two keys whose hashes collide are both kept;
- **runs** of ``(hash, where the key is in the log)`` records sorted by hash find a key's earlier copies. A
  chunk adds one run; runs are merged four at a time (a log-structured merge), so that each record is
  rewritten once a level, ``log4(keys / chunk)`` times in all, never the whole set each chunk. Small runs stay
  in memory, the others live in temporary files with one hash in memory per 4 KiB page.

Memory: the filter, 10 to 12.5 bits a key until it reaches ``max_filter_bytes`` (64 MiB by default: 1.4 MiB at
1 million keys, 13 MiB at 10 million, 64 MiB from about 53 million on; past it the filter fills, more keys are
looked up on disk, and the answers stay exact), the three newest runs (a chunk's keys each, 16 bytes a key)
and the small runs of the next level (at most 3 MiB), one hash a page of the runs on disk (0.03 bytes a key),
and the buffers of a merge (about 5 MiB). Measured: 15 MiB at 10 million keys (23 MiB when the filter grew
twofold, 10 to 20 bits a key), 67 MiB at 100 million.
Disk: the keys' text (for ASCII keys one byte a character plus one a part, four bytes a character otherwise)
plus 16 bytes a key, and the runs' share again while the largest runs merge: 4.5 GiB at 100 million keys of
30 characters. The temporary files have no name: the system frees them when the object is closed or the
process ends, however it ends.
"""

from __future__ import annotations

import bisect
import itertools
import json
import operator
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import numpy as np

#: Records of a run on disk read at a time for a lookup: one 4 KiB page, one hash of it kept in memory.
PAGE_RECORDS = 256
#: Runs of at most this many records stay in memory (16 bytes each).
MEMORY_RUN_RECORDS = 1 << 16
#: Runs merged at once; a level holds fewer than this many runs.
FANOUT = 4
#: Records read from each run at a time while merging.
MERGE_BLOCK = 1 << 14
#: Hashes looked up in a run on disk at a time.
LOOKUP_BATCH = 128
#: Bits of filter a key, at least, while the filter may still grow.
BITS_PER_KEY = 10
#: A filter that grows is sized for this many keys a hundred held: 10 to 12.5 bits a key. Each growth re-reads
#: the runs' hashes; growing by a quarter reads every hash about five times over a run (twice when it doubled).
FILTER_GROWTH_PERCENT = 125
#: Bits set a key, all in one 64-bit word of the filter.
FILTER_PROBES = 5
#: The most memory the filter takes; past it the filter fills and more keys are confirmed on disk.
MAX_FILTER_BYTES = 64 << 20
#: Bytes read at once to get one key back from the key log (more when the key is longer).
KEY_READ_BYTES = 256

_EMPTY = np.empty(0, dtype=np.int64)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class SeenKeys:
    """
    The keys of a run so far; :meth:`first_occurrences` tells, chunk by chunk, which keys are new.

    A key is a tuple of parts, compared as Python compares tuples; parts are ``str`` (or ``None`` and
    numbers: what JSON holds). Every candidate duplicate is confirmed on the full key, never on its hash alone.

    :param hash_function: the hash of a key tuple (a signed 64-bit ``int``). By default the parts' own
        ``hash`` (which ``str`` caches), combined. A hash that collides often keeps the answers exact but
        costs time.
    :param directory: where the temporary files go (the system's temporary directory by default).
    :param max_filter_bytes: the most memory the filter takes.
    """

    def __init__(
        self,
        *,
        hash_function: Callable[[tuple[Any, ...]], int] | None = None,
        directory: str | None = None,
        max_filter_bytes: int = MAX_FILTER_BYTES,
    ) -> None:
        self._hash_function = hash_function
        self._directory = directory
        self._filter = _Filter(max_filter_bytes)
        self._log = _KeyLog(directory)
        self._levels: list[list[_Run]] = []
        self._count = 0
        #: Pages of runs on disk read, and keys read back from the key log, by lookups (for tests and benchmarks).
        self.pages_read = 0
        self.keys_read = 0

    def __len__(self) -> int:
        return self._count

    def __enter__(self) -> SeenKeys:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the temporary files (the object is not usable after)."""
        self._log.close()
        for level in self._levels:
            for run in level:
                run.close()
        self._levels = []

    @property
    def memory_bytes(self) -> int:
        """The memory held: the filter, the runs kept in memory and the page hashes of the others."""
        runs = sum(run.memory_bytes for level in self._levels for run in level)
        return int(self._filter.words.nbytes) + runs

    @property
    def disk_bytes(self) -> int:
        """The temporary files' size: the key log and the runs on disk."""
        return self._log.size + sum(16 * run.size for level in self._levels for run in level if run.on_disk)

    def first_occurrences(self, keys: Sequence[tuple[Any, ...]]) -> list[bool]:
        """
        For each key, whether it is seen here for the first time in the run (and remember it).
        Within ``keys`` only the first of equal keys is new. The keys of one call have one number of parts.
        """
        if not keys:
            return []
        lengths = set(map(len, keys))
        if len(lengths) != 1 or not (parts := lengths.pop()):
            raise ValueError(f"The keys of one call have one number of parts, at least one, not {sorted(lengths)}")
        flat = list(itertools.chain.from_iterable(keys))
        first: list[bool] = self._first_occurrences([flat[part::parts] for part in range(parts)], flat).tolist()
        return first

    def first_occurrences_of(self, *columns: Sequence[Any]) -> list[bool]:
        """
        :meth:`first_occurrences` of the keys ``zip(*columns)``, given as columns, without a tuple a key:
        ``first_occurrences_of(event_names, event_ids)``.
        """
        first: list[bool] = self.first_occurrence_mask(*columns).tolist()
        return first

    def first_occurrence_mask(self, *columns: Sequence[Any]) -> np.ndarray:
        """:meth:`first_occurrences_of` as a boolean array, for a caller that goes on in numpy."""
        count = len(columns[0]) if columns else 0
        if any(len(column) != count for column in columns):
            raise ValueError("The columns of the keys differ in length")
        if not count:
            return np.zeros(0, dtype=bool)
        return self._first_occurrences([column if isinstance(column, list) else list(column) for column in columns])

    def _first_occurrences(self, keys: list[list[Any]], flat: list[Any] | None = None) -> np.ndarray:
        """``keys`` as columns; ``flat``, when given, the parts of every key one after the other."""
        count = len(keys[0])
        hashes = self._hashes(keys, count)
        distinct = _first_of_each_key(keys, hashes)  # in hash order
        distinct_hashes = hashes[distinct]
        words, masks = self._filter.locate(distinct_hashes)
        known = self._filter.might_contain(words, masks)
        if known.any():
            known[known] = self._stored(keys, distinct[known], distinct_hashes[known])
        new = ~known
        new_rows = distinct[new]
        if len(new_rows):
            self._remember(keys, flat, new_rows, distinct_hashes[new], words[new], masks[new])
        first = np.zeros(count, dtype=bool)
        first[new_rows] = True
        return first

    def _hashes(self, keys: list[list[Any]], count: int) -> np.ndarray:
        if self._hash_function is not None:
            return np.fromiter(map(self._hash_function, zip(*keys, strict=True)), dtype=np.int64, count=count)
        combined = np.fromiter(map(hash, keys[0]), dtype=np.int64, count=count).view(np.uint64)
        for column in keys[1:]:
            combined *= _GOLDEN  # the order of the parts counts: (a, b) and (b, a) hash apart
            combined ^= np.fromiter(map(hash, column), dtype=np.int64, count=count).view(np.uint64)
        return combined.view(np.int64)

    def _stored(self, keys: list[list[Any]], rows: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """
        For each of ``rows`` (distinct keys, the filter's candidates), whether an earlier chunk held its key.
        The runs in memory are looked in first, then those on disk from the largest (the likeliest to hold an
        earlier key); a key found is looked for no further.
        """
        wanted, which = np.unique(hashes, return_inverse=True)
        rows_of: dict[int, list[int]] = {}
        for candidate, index in enumerate(which.tolist()):
            rows_of.setdefault(index, []).append(candidate)
        stored = np.zeros(len(rows), dtype=bool)
        pending = np.ones(len(wanted), dtype=bool)  # hashes with a candidate not found yet
        runs = sorted((run for level in self._levels for run in level), key=lambda run: (run.on_disk, -run.size))
        for run in runs:
            looked = np.flatnonzero(pending)
            if not len(looked):
                break
            hit_index, offsets = run.find(wanted[looked])
            self.pages_read += run.pages_read
            run.pages_read = 0
            if not len(hit_index):
                continue
            self.keys_read += len(offsets)
            # Lists, compared with ==: a key whose parts hash unlike str (a str subclass) is still found.
            earlier: dict[int, list[tuple[Any, ...]]] = {}
            for index, key in zip(looked[hit_index].tolist(), self._log.read(offsets.tolist()), strict=True):
                earlier.setdefault(index, []).append(key)
            for index, same_hash in earlier.items():
                left = False
                for candidate in rows_of[index]:
                    if not stored[candidate]:
                        stored[candidate] = _key(keys, int(rows[candidate])) in same_hash
                        left = left or not stored[candidate]
                pending[index] = left
        return stored

    def _remember(
        self,
        keys: list[list[Any]],
        flat: list[Any] | None,
        rows: np.ndarray,
        hashes: np.ndarray,
        words: np.ndarray,
        masks: np.ndarray,
    ) -> None:
        """Keep the keys of ``rows`` (in hash order, as their ``hashes`` and filter ``words`` and ``masks``)."""
        parts = len(keys)
        by_row = np.argsort(rows)
        in_row_order = rows[by_row]
        if len(rows) < len(keys[0]):
            if flat is None:
                picked = in_row_order.tolist()
                flat = _interleaved([list(map(column.__getitem__, picked)) for column in keys])
            else:
                indexes = (in_row_order[:, None] * parts + np.arange(parts)).ravel().tolist()
                flat = list(operator.itemgetter(*indexes)(flat)) if len(indexes) > 1 else [flat[indexes[0]]]
        elif flat is None:
            flat = _interleaved(keys)
        offsets = self._log.append(flat, parts)  # in row order
        rank = np.empty(len(rows), dtype=np.intp)  # where each of rows is in in_row_order
        rank[by_row] = np.arange(len(rows))
        self._add_run(_MemoryRun(hashes, offsets[rank]), 0)
        self._count += len(rows)
        if self._filter.should_grow(self._count):
            self._filter.rebuild(self._count, self._all_hashes())
        else:
            self._filter.add(words, masks)

    def _add_run(self, run: _Run, level: int) -> None:
        while True:
            if level == len(self._levels):
                self._levels.append([])
            self._levels[level].append(run)
            if len(self._levels[level]) < FANOUT:
                return
            runs, self._levels[level] = self._levels[level], []
            run = _merge(runs, self._directory)
            level += 1

    def _all_hashes(self) -> Iterator[np.ndarray]:
        for level in self._levels:
            for run in level:
                for hashes, _ in run.blocks():
                    yield hashes


def _interleaved(columns: list[list[Any]]) -> list[Any]:
    """Return the parts of every key one after the other, from the keys as columns."""
    parts = len(columns)
    flat: list[Any] = [None] * (parts * len(columns[0]))
    for part, column in enumerate(columns):
        flat[part::parts] = column  # one slice assignment a part, not a tuple a key
    return flat


def _key(keys: list[list[Any]], row: int) -> tuple[Any, ...]:
    return tuple(column[row] for column in keys)


def _first_of_each_key(keys: list[list[Any]], hashes: np.ndarray) -> np.ndarray:
    """
    Return the row of the first occurrence of each distinct key, in hash order (rows of equal hashes in row order).
    Keys whose hashes are equal are told apart on the keys themselves.
    """
    order = np.argsort(hashes)
    ordered = hashes[order]
    starts = np.ones(len(order), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    if starts.all():
        return order
    group_starts = np.flatnonzero(starts)
    sizes = np.diff(np.append(group_starts, len(order)))
    first = order[group_starts]
    keep = [first]
    shared = sizes > 1
    for group, start, size in zip(
        np.flatnonzero(shared).tolist(), group_starts[shared].tolist(), sizes[shared].tolist(), strict=True
    ):
        rows = sorted(order[start : start + size].tolist())
        first[group] = rows[0]
        met = {_key(keys, rows[0])}
        more = []
        for row in rows[1:]:
            key = _key(keys, row)
            if key not in met:
                met.add(key)
                more.append(row)
        if more:
            keep.append(np.array(more, dtype=first.dtype))
    if len(keep) == 1:
        return first
    distinct = np.concatenate(keep)
    return distinct[np.argsort(hashes[distinct], kind="stable")]


class _Filter:
    """
    A blocked Bloom filter: each key sets :data:`FILTER_PROBES` bits of one 64-bit word. It answers "maybe
    seen" or "surely new"; it grows by rebuilding from the runs, to at most ``max_bytes``.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_words = max(1, max_bytes // 8)
        self.words = np.zeros(min(1 << 13, self.max_words), dtype=np.uint64)  # 64 KiB: 52,000 keys

    def should_grow(self, count: int) -> bool:
        return len(self.words) < self.max_words and count * BITS_PER_KEY > len(self.words) * 64

    def rebuild(self, count: int, hashes: Iterator[np.ndarray]) -> None:
        """Size the filter for :data:`FILTER_GROWTH_PERCENT` % of ``count`` keys (within its bound), add ``hashes``."""
        self.words = np.empty(0, dtype=np.uint64)  # the old filter goes first: never both in memory
        self.words = np.zeros(
            min(self.max_words, -(-FILTER_GROWTH_PERCENT * count * BITS_PER_KEY // 6400)), dtype=np.uint64
        )
        for block in hashes:
            self.add(*self.locate(block))

    def locate(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the word of each hash and the bits it sets there."""
        mixed = _mix(hashes)
        word = ((mixed >> np.uint64(32)) * np.uint64(len(self.words))) >> np.uint64(32)
        mask = np.zeros(len(mixed), dtype=np.uint64)
        one = np.uint64(1)
        for probe in range(FILTER_PROBES):
            mask |= one << ((mixed >> np.uint64(6 * probe)) & np.uint64(63))
        return word.astype(np.intp), mask

    def might_contain(self, words: np.ndarray, masks: np.ndarray) -> np.ndarray:
        return np.asarray((self.words[words] & masks) == masks)

    def add(self, words: np.ndarray, masks: np.ndarray) -> None:
        while len(words):  # keys of one word in one assignment: the last wins, the others go again
            self.words[words] |= masks
            missing = (self.words[words] & masks) != masks
            words, masks = words[missing], masks[missing]


def _mix(hashes: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: every bit of the output depends on every bit of the hash."""
    x = hashes.astype(np.uint64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


class _Run:
    """``(hash, offset of the key in the key log)`` records sorted by hash."""

    size: int
    pages_read = 0
    on_disk = False

    @property
    def memory_bytes(self) -> int:
        raise NotImplementedError

    def find(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For sorted distinct ``wanted`` hashes, every record with one of them: ``(index in wanted, position)``."""
        raise NotImplementedError

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, self.size, MERGE_BLOCK):
            yield self.read(start, min(start + MERGE_BLOCK, self.size))

    def close(self) -> None:
        pass


class _MemoryRun(_Run):
    def __init__(self, hashes: np.ndarray, positions: np.ndarray) -> None:
        self.hashes = hashes
        self.positions = positions
        self.size = len(hashes)

    @property
    def memory_bytes(self) -> int:
        return int(self.hashes.nbytes + self.positions.nbytes)

    def find(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _matches(self.hashes, self.positions, wanted, np.arange(len(wanted)))

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        return self.hashes[start:stop], self.positions[start:stop]


class _FileRun(_Run):
    """Records in a temporary file; the first hash of each page of :data:`PAGE_RECORDS` records in memory."""

    def __init__(self, directory: str | None) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile(dir=directory, buffering=0)
        self.size = 0
        self._fences: list[np.ndarray] = []
        self.fences = _EMPTY

    def write(self, hashes: np.ndarray, positions: np.ndarray) -> None:
        records = np.empty((len(hashes), 2), dtype=np.int64)
        records[:, 0] = hashes
        records[:, 1] = positions
        _write_all(self.file, records.tobytes())
        self._fences.append(hashes[(-self.size) % PAGE_RECORDS :: PAGE_RECORDS].copy())  # not a view of the block
        self.size += len(hashes)

    def finish(self) -> None:
        self.fences = np.concatenate(self._fences) if self._fences else _EMPTY
        self._fences = []

    on_disk = True

    @property
    def memory_bytes(self) -> int:
        return int(self.fences.nbytes)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        data = _pread_all(self.file.fileno(), (stop - start) * 16, start * 16)
        records = np.frombuffer(data, dtype=np.int64).reshape(-1, 2)
        return records[:, 0], records[:, 1]

    def find(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Records with hash h lie in the pages from the last page starting below h to the last starting at h.
        last = np.searchsorted(self.fences, wanted, side="right") - 1
        first = np.maximum(np.searchsorted(self.fences, wanted, side="left") - 1, 0)
        index = np.flatnonzero(last >= 0)
        if len(index) * 4 > len(self.fences):  # most pages wanted: read the run through instead
            return self._scan(wanted)
        found_index: list[np.ndarray] = [_EMPTY]
        found_offset: list[np.ndarray] = [_EMPTY]
        for start in range(0, len(index), LOOKUP_BATCH):  # a batch reads at most 2 * LOOKUP_BATCH pages
            batch = index[start : start + LOOKUP_BATCH]
            hit_index, hit_offset = self._find_in_pages(wanted[batch], batch, first[batch], last[batch])
            found_index.append(hit_index)
            found_offset.append(hit_offset)
        return np.concatenate(found_index), np.concatenate(found_offset)

    def _find_in_pages(
        self, wanted: np.ndarray, index: np.ndarray, first: np.ndarray, last: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if (last > first).any():  # a hash at the start of a page may have copies on the page before
            widths = last - first + 1
            pages = _distinct(
                np.sort(np.repeat(first - (np.cumsum(widths) - widths), widths) + np.arange(widths.sum()))
            )
        else:
            pages = _distinct(first)  # wanted is sorted, so are its pages
        # The pages, in order, read as stretches of consecutive pages: their records stay sorted.
        breaks = np.flatnonzero(np.diff(pages) != 1) + 1
        stretch_starts = np.append(pages[0], pages[breaks]).tolist()
        stretch_ends = np.append(pages[breaks - 1], pages[-1]).tolist()
        fd = self.file.fileno()
        data = b"".join(
            _pread_all(
                fd, (min((end + 1) * PAGE_RECORDS, self.size) - start * PAGE_RECORDS) * 16, start * PAGE_RECORDS * 16
            )
            for start, end in zip(stretch_starts, stretch_ends, strict=True)
        )
        self.pages_read += len(pages)
        records = np.frombuffer(data, dtype=np.int64).reshape(-1, 2)
        return _matches(records[:, 0], records[:, 1], wanted, index)

    def _scan(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found_index: list[np.ndarray] = []
        found_position: list[np.ndarray] = []
        everything = np.arange(len(wanted))
        for hashes, positions in self.blocks():
            self.pages_read += -(-len(hashes) // PAGE_RECORDS)
            hit_index, hit_position = _matches(hashes, positions, wanted, everything)
            found_index.append(hit_index)
            found_position.append(hit_position)
        return np.concatenate(found_index), np.concatenate(found_position)

    def close(self) -> None:
        self.file.close()


def _distinct(ordered: np.ndarray) -> np.ndarray:
    """Return the distinct values of a sorted array (``np.unique`` may allocate a hash table of megabytes)."""
    keep = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _matches(
    hashes: np.ndarray, positions: np.ndarray, wanted: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the records of sorted ``hashes`` equal to one of ``wanted``: ``(index of the wanted hash, position)``."""
    left = np.searchsorted(hashes, wanted, side="left")
    counts = np.searchsorted(hashes, wanted, side="right") - left
    total = int(counts.sum())
    if not total:
        return _EMPTY, _EMPTY
    starts = np.repeat(left - (np.cumsum(counts) - counts), counts)
    return np.repeat(index, counts), positions[starts + np.arange(total)]


def _merge(runs: list[_Run], directory: str | None) -> _Run:
    """One run of the records of ``runs``, read and written a block at a time."""
    size = sum(run.size for run in runs)
    if size <= MEMORY_RUN_RECORDS:
        hashes = np.concatenate([run.read(0, run.size)[0] for run in runs])
        positions = np.concatenate([run.read(0, run.size)[1] for run in runs])
        order = np.argsort(hashes, kind="stable")
        merged: _Run = _MemoryRun(hashes[order], positions[order])
    else:
        out = _FileRun(directory)
        for hashes, positions in _merged_blocks(runs):
            out.write(hashes, positions)
        out.finish()
        merged = out
    for run in runs:
        run.close()
    return merged


class _Cursor:
    """Where a merge is in one run: the next record to read, and the records read but not yet merged."""

    __slots__ = ("hashes", "offsets", "run", "start")

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.start = 0
        self.hashes = self.offsets = _EMPTY

    @property
    def more(self) -> bool:
        return self.start < self.run.size

    def fill(self) -> None:
        if not len(self.hashes) and self.more:
            stop = min(self.start + MERGE_BLOCK, self.run.size)
            self.hashes, self.offsets = self.run.read(self.start, stop)
            self.start = stop


def _merged_blocks(runs: list[_Run]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield the records of sorted ``runs`` in hash order, in blocks."""
    cursors = [_Cursor(run) for run in runs]
    while True:
        for cursor in cursors:
            cursor.fill()
        live = [cursor for cursor in cursors if len(cursor.hashes)]
        if not live:
            return
        # Records up to the smallest last buffered hash of a run with more to read are all buffered.
        bounds = [cursor.hashes[-1] for cursor in live if cursor.more]
        bound = min(bounds) if bounds else None
        hash_parts, offset_parts = [], []
        for cursor in live:
            cut = len(cursor.hashes) if bound is None else int(np.searchsorted(cursor.hashes, bound, side="right"))
            hash_parts.append(cursor.hashes[:cut])
            offset_parts.append(cursor.offsets[:cut])
            cursor.hashes, cursor.offsets = cursor.hashes[cut:], cursor.offsets[cut:]
        hashes = np.concatenate(hash_parts)
        order = np.argsort(hashes, kind="stable")
        yield hashes[order], np.concatenate(offset_parts)[order]


class _KeyLog:
    """
    Every distinct key in full, in a temporary file; a key is read back from its offset, in one read.

    A chunk's keys are one segment. When every part is a ``str`` without NUL, the parts one after the other,
    each ended by NUL, in ASCII or, when one is not ASCII, in UTF-32 (lone surrogates kept); otherwise one JSON
    array a key, a line each.
    """

    def __init__(self, directory: str | None) -> None:
        self._directory = directory
        self._opened: IO[bytes] | None = None  # opened with the first key: a run of no key needs no disk
        self.size = 0
        self._segment_starts: list[int] = []
        self._segments: list[tuple[str, int]] = []  # codec and parts of each segment

    @property
    def _file(self) -> IO[bytes]:
        if self._opened is None:
            self._opened = tempfile.TemporaryFile(dir=self._directory, buffering=0)
        return self._opened

    def append(self, flat: list[Any], parts: int) -> np.ndarray:
        """Write the keys whose ``parts`` parts follow one another in ``flat``; return where each begins."""
        codec, data, starts = _encode(flat, parts)
        self._segment_starts.append(self.size)
        self._segments.append((codec, parts))
        _write_all(self._file, data)
        offsets = starts + self.size
        self.size += len(data)
        return offsets

    def read(self, offsets: list[int]) -> list[tuple[Any, ...]]:
        """Return the keys that begin at ``offsets``."""
        fd = self._file.fileno()
        keys = []
        for offset in offsets:
            segment = bisect.bisect_right(self._segment_starts, offset) - 1
            codec, parts = self._segments[segment]
            left = (self._segment_starts[segment + 1] if segment + 1 < len(self._segments) else self.size) - offset
            size = min(left, KEY_READ_BYTES * (4 if codec == "utf-32" else 1))
            while (key := _decode(codec, parts, _pread_all(fd, size, offset))) is None:
                if size == left:
                    raise OSError(f"A key of the in-run dedup log is cut short at offset {offset}")
                size = min(left, size * 4)
            keys.append(key)
        return keys

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()


def _encode(flat: list[Any], parts: int) -> tuple[str, bytes, np.ndarray]:
    """``(codec, bytes, where each key begins)`` of a segment."""
    try:
        text = "\x00".join(flat) + "\x00"
    except TypeError:  # a part that is not text
        text = ""
    if text and text.count("\x00") == len(flat):
        if text.isascii():
            codec, data, width = "ascii", text.encode("ascii"), 1
            units = np.frombuffer(data, dtype=np.uint8)
        else:
            codec, data, width = "utf-32", text.encode("utf-32-le", "surrogatepass"), 4
            units = np.frombuffer(data, dtype=np.uint32)
        ends = np.flatnonzero(units == 0)[parts - 1 :: parts] + 1
        return codec, data, np.append(0, ends[:-1]) * width
    try:
        lines = [json.dumps(flat[start : start + parts], ensure_ascii=True) for start in range(0, len(flat), parts)]
    except TypeError as error:
        raise TypeError(f"The parts of in-run dedup keys are str, None or numbers ({error})") from None
    data = ("\n".join(lines) + "\n").encode("ascii")
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
    return "json", data, np.append(0, ends[:-1])


def _decode(codec: str, parts: int, data: bytes) -> tuple[Any, ...] | None:
    """Return the key at the start of ``data``, or ``None`` when ``data`` ends before it does."""
    if codec == "json":
        line, newline, _ = data.partition(b"\n")
        return tuple(json.loads(line)) if newline else None
    text = data.decode("ascii") if codec == "ascii" else data.decode("utf-32-le", "surrogatepass")
    values = text.split("\x00", parts)
    return tuple(values[:parts]) if len(values) > parts else None


def _write_all(file: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = file.write(view)
        view = view[written or 0 :]


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    while len(data) < size:
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            raise OSError(f"unexpected end of a temporary file at {offset + len(data)}")
        data += more
    return data
