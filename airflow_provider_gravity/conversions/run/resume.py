"""
Acknowledged progress of a run, kept in a key-value store that survives task retries (Airflow 3.3's
``task_state_store``), so that a retried task does not send again what Gravity already acknowledged.

Progress is recorded per chunk of rows, identified by its position in the result and a digest of the
event keys it holds. On a retry a chunk is skipped only when its digest matches: if the query's row order
is not stable (no ``ORDER BY event_id``), the digests differ, resuming stops, and the rest of the window is
sent again (Gravity's 48-hour dedup absorbs the overlap).

The state is one key per chunk (:func:`chunk_key`) plus a small index under :data:`STATE_KEY` (the query's
fingerprint, how many chunk keys there may be, Gravity's top messages). A write sets only the keys of the
chunks that changed, and the index when it changed, so that each write costs the same at chunk 10 as at
chunk 10,000: the bytes written over a run grow with its chunks, not with their square. A retry reads a
chunk's key when it reaches that chunk.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from airflow_provider_gravity.conversions.run.tally import Tally

log = logging.getLogger(__name__)

STATE_KEY = "gravity_send_conversions_progress"
#: The state's layout: the index and one key per chunk. A state of an earlier version (every chunk in the
#: index) is still read, and rewritten in this layout on the first write.
STATE_FORMAT = 2
#: Chunk keys the index announces beyond the last chunk seen, so that it is rewritten once every so many
#: chunks, not every chunk.
INDEX_STEP = 32


def chunk_key(chunk_index: int) -> str:
    """Return the state store key of one chunk's progress."""
    return f"{STATE_KEY}.chunk.{chunk_index}"


class StateStore(Protocol):
    """What is needed of Airflow's ``task_state_store``."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


def chunk_digest(event_names: Sequence[str | None], event_ids: Sequence[str | None]) -> str:
    """
    Return a digest of a chunk's event keys in row order: the SHA-256 of ``name US id RS`` for each row (``None``
    written ``None``), UTF-8 with lone surrogates kept, cut to 32 hex digits. The resume state of an earlier try
    is compared with it, so the bytes digested never change.

    :raises ValueError: when the two columns differ in length.
    """
    if len(event_names) != len(event_ids):
        raise ValueError(f"{len(event_names)} event names for {len(event_ids)} event ids")
    parts: list[object] = ["", "\x1f", "", "\x1e"] * len(event_names)  # one join for the chunk, not one update a row
    parts[0::4], parts[2::4] = event_names, event_ids
    try:
        text = "".join(cast("list[str]", parts))
    except TypeError:  # a None (or a value that is not text): written as the format of one row at a time wrote it
        parts[0::4], parts[2::4] = map(str, event_names), map(str, event_ids)
        text = "".join(cast("list[str]", parts))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass
class SavedChunk:
    """
    What a previous try acknowledged of one chunk.

    :param complete: the whole chunk was accounted for; ``tally`` covers all its rows.
    :param tally: counters of the acknowledged part.
    :param ranges: ``(first_row, last_row)`` row positions of acknowledged batches (partial chunks).
    """

    complete: bool
    tally: Tally
    ranges: list[tuple[int, int]] = field(default_factory=list)


class ResumeLog:
    """
    Reads the progress of an earlier try and records the progress of this one.

    :param store: the task state store, or ``None`` (no resume).
    :param fingerprint: identifies the query and its parameters; progress of another query is ignored.
    :param min_interval: seconds between two writes of partial progress (completed chunks write at once).
    """

    def __init__(self, store: StateStore | None, fingerprint: str, *, min_interval: float = 1.0) -> None:
        self.store = store
        self.fingerprint = fingerprint
        self.min_interval = min_interval
        # Progress of chunks not yet written, or still open (partial): written, complete chunks leave memory.
        self._entries: dict[int, dict[str, Any]] = {}
        self._dirty: set[int] = set()
        self._index_dirty = False
        # Chunks below this may have a key in the store: the earlier tries' and this one's.
        self._bound = 0
        self._saved_bound = 0  # the earlier tries': their keys are read when their chunk comes
        # Gravity's messages of every acknowledged part, top ones only: kept once for the run, not per chunk,
        # so the state stays small however many distinct messages Gravity sends.
        self.messages = Tally()
        self._last_write = 0.0
        self.resuming = False
        self.order_changed = False
        self.chunks_skipped = 0
        self.restored_rejected = 0
        if store is not None:
            state = self._call_store("read", store.get, STATE_KEY, None)
            if isinstance(state, dict) and state.get("fingerprint") == fingerprint:
                self.messages = Tally(state.get("messages") or {})
                chunks = state.get("chunks")
                if isinstance(chunks, dict):  # an earlier version's state: every chunk in one value
                    legacy = {int(index): entry for index, entry in chunks.items()}
                    self._entries.update(legacy)
                    self._dirty.update(legacy)  # rewritten as chunk keys with the first write
                    self._index_dirty = True
                    self._saved_bound = max(legacy, default=-1) + 1
                else:
                    self._saved_bound = int(chunks or 0)
                self._bound = self._saved_bound
                self.resuming = self._saved_bound > 0

    def restore(self, chunk_index: int, digest: str) -> SavedChunk | None:
        """
        Return the acknowledged part of chunk ``chunk_index`` from an earlier try, if its rows are the same.
        The first mismatch ends resuming for the rest of the run.
        """
        if not self.resuming or chunk_index >= self._saved_bound:
            return None
        saved = self._entries.get(chunk_index)
        if saved is None and self.store is not None:
            saved = self._call_store("read", self.store.get, chunk_key(chunk_index), None)
        if not isinstance(saved, dict):
            return None
        if saved.get("digest") != digest:
            log.warning(
                "Chunk %d holds other rows than in the previous try: the query's row order is not stable "
                "(add ORDER BY event_id). Not resuming; the rest of the window is sent again and Gravity's "
                "48-hour dedup absorbs the overlap.",
                chunk_index,
            )
            self._forget_from(chunk_index)
            return None
        if saved.get("complete"):
            self.chunks_skipped += 1
            restored = SavedChunk(True, Tally(saved.get("tally") or {}))
        else:
            self._entries[chunk_index] = saved  # this try's acknowledged batches are added to it
            ranges = [(int(a), int(b)) for a, b, _ in saved.get("ranges", [])]
            restored = SavedChunk(False, sum((Tally(t) for _, _, t in saved.get("ranges", [])), Tally()), ranges)
        self.restored_rejected += restored.tally["bucket.rejected"]
        return restored

    def _forget_from(self, chunk_index: int) -> None:
        """
        Forget the earlier tries' progress from ``chunk_index`` on, whose rows changed: here and in the store
        (once, at the change), and Gravity's messages with it, which were about rows now sent again.
        """
        self.resuming = False
        self.order_changed = True
        self.messages = Tally()
        self._index_dirty = True
        stale = range(chunk_index, self._saved_bound)
        for index in stale:
            self._entries.pop(index, None)
            self._dirty.discard(index)
        for index in stale:
            if self.store is None:
                break
            self._call_store("save", self.store.delete, chunk_key(index))

    def batch_acknowledged(self, chunk_index: int, digest: str, first_row: int, last_row: int, tally: Tally) -> None:
        """Record that the rows ``first_row..last_row`` of a chunk got Gravity's answer."""
        if self.store is None:  # no resume (or its store failed): nothing would read it
            return
        entry = self._entries.get(chunk_index)
        if entry is None or entry.get("digest") != digest or entry.get("complete"):
            entry = self._entries[chunk_index] = {"digest": digest, "ranges": []}
        messages = tally.messages()
        if messages:
            self.messages.update(messages)
            self.messages.compact_messages()
            self._index_dirty = True
        entry.setdefault("ranges", []).append([first_row, last_row, tally.without_messages().to_json()])
        self._touch(chunk_index)
        self.flush()

    def chunk_completed(self, chunk_index: int, digest: str, tally: Tally) -> None:
        """
        Record that every row of a chunk is accounted for. Its messages were recorded with its batches.
        """
        if self.store is None:
            return
        self._entries[chunk_index] = {"digest": digest, "complete": True, "tally": tally.without_messages().to_json()}
        self._touch(chunk_index)
        self.flush(force=True)

    def _touch(self, chunk_index: int) -> None:
        self._dirty.add(chunk_index)
        if chunk_index >= self._bound:
            self._bound = chunk_index + 1 + INDEX_STEP
            self._index_dirty = True

    def flush(self, *, force: bool = False) -> None:
        """
        Write the progress that changed to the store, at most every ``min_interval`` seconds unless forced:
        the key of each chunk that changed, then the index if it changed.
        """
        if self.store is None or not (self._dirty or self._index_dirty):
            return
        now = time.monotonic()
        if not force and now - self._last_write < self.min_interval:
            return
        for index in sorted(self._dirty):
            entry = self._entries[index]
            self._call_store("save", self.store.set, chunk_key(index), entry)
            if self.store is None:
                return
            if entry.get("complete"):
                del self._entries[index]  # written; nothing is added to a complete chunk
        self._dirty.clear()
        if self._index_dirty:
            index_state = {
                "fingerprint": self.fingerprint,
                "format": STATE_FORMAT,
                "chunks": self._bound,
                "messages": self.messages.to_json(),
            }
            self._call_store("save", self.store.set, STATE_KEY, index_state)
            self._index_dirty = False
        self._last_write = now

    def finish(self) -> None:
        """Forget the progress once the run succeeded, so that a later manual re-run sends afresh."""
        if self.store is None:
            return
        # The chunk keys first: a try stopped half-way keeps its index and resumes what is left, as before.
        for index in range(max(self._bound, self._saved_bound)):
            self._call_store("clear", self.store.delete, chunk_key(index))
            if self.store is None:
                return
        self._call_store("clear", self.store.delete, STATE_KEY)
        self._entries.clear()
        self._dirty.clear()
        self._index_dirty = False

    def _call_store(self, action: str, method: Callable[..., Any], *args: Any) -> Any:
        """Resuming is an optimisation: a store that fails is switched off with a warning, never fails the run."""
        try:
            return method(*args)
        except Exception as err:
            log.warning(
                "Could not %s the progress in the task state store (%s); a retry of this task will send the "
                "whole window again (Gravity's 48-hour dedup and the delivery log absorb it).",
                action,
                type(err).__name__,
            )
            self.store = None
            return None
