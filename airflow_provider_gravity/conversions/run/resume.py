"""
Acknowledged progress of a run, kept in a key-value store that survives task retries (Airflow 3.3's
``task_state_store``), so that a retried task does not send again what Gravity already acknowledged.

Progress is recorded per chunk of rows, identified by its position in the result and a digest of the
event keys it holds. On a retry a chunk is skipped only when its digest matches: if the query's row order
is not stable (no ``ORDER BY event_id``), the digests differ, resuming stops, and the rest of the window is
sent again (Gravity's 48-hour dedup absorbs the overlap).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_provider_gravity.conversions.run.tally import Tally

log = logging.getLogger(__name__)

STATE_KEY = "gravity_send_conversions_progress"


class StateStore(Protocol):
    """What is needed of Airflow's ``task_state_store``."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


def chunk_digest(event_names: Sequence[str | None], event_ids: Sequence[str | None]) -> str:
    """A digest of a chunk's event keys in row order."""
    digest = hashlib.sha256()
    for name, event_id in zip(event_names, event_ids, strict=True):
        digest.update(f"{name}\x1f{event_id}\x1e".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


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
        self._saved: dict[str, dict[str, Any]] = {}
        self._chunks: dict[str, dict[str, Any]] = {}
        # Gravity's messages of every acknowledged part, top ones only: kept once for the run, not per chunk,
        # so the state stays small however many distinct messages Gravity sends.
        self.messages = Tally()
        self._last_write = 0.0
        self._dirty = False
        self.resuming = False
        self.order_changed = False
        self.chunks_skipped = 0
        self.restored_rejected = 0
        if store is not None:
            state = self._call_store("read", store.get, STATE_KEY, None)
            if isinstance(state, dict) and state.get("fingerprint") == fingerprint:
                self._saved = dict(state.get("chunks") or {})
                self._chunks = dict(self._saved)
                self.messages = Tally(state.get("messages") or {})
                self.resuming = bool(self._saved)

    def restore(self, chunk_index: int, digest: str) -> SavedChunk | None:
        """
        The acknowledged part of chunk ``chunk_index`` from an earlier try, if its rows are the same.
        The first mismatch ends resuming for the rest of the run.
        """
        if not self.resuming:
            return None
        saved = self._saved.get(str(chunk_index))
        if saved is None:
            return None
        if saved.get("digest") != digest:
            log.warning(
                "Chunk %d holds other rows than in the previous try: the query's row order is not stable "
                "(add ORDER BY event_id). Not resuming; the rest of the window is sent again and Gravity's "
                "48-hour dedup absorbs the overlap.",
                chunk_index,
            )
            self.resuming = False
            self.order_changed = True
            self._chunks = {k: v for k, v in self._chunks.items() if int(k) < chunk_index}
            self.messages = Tally()  # they were Gravity's words on rows that are now sent again
            return None
        if saved.get("complete"):
            self.chunks_skipped += 1
            restored = SavedChunk(True, Tally(saved.get("tally") or {}))
        else:
            ranges = [(int(a), int(b)) for a, b, _ in saved.get("ranges", [])]
            restored = SavedChunk(False, sum((Tally(t) for _, _, t in saved.get("ranges", [])), Tally()), ranges)
        self.restored_rejected += restored.tally["bucket.rejected"]
        return restored

    def batch_acknowledged(self, chunk_index: int, digest: str, first_row: int, last_row: int, tally: Tally) -> None:
        """Record that the rows ``first_row..last_row`` of a chunk got Gravity's answer."""
        entry = self._chunks.setdefault(str(chunk_index), {"digest": digest, "ranges": []})
        if entry.get("digest") != digest:
            entry = self._chunks[str(chunk_index)] = {"digest": digest, "ranges": []}
        self.messages.update(tally.messages())
        self.messages.compact_messages()
        entry.setdefault("ranges", []).append([first_row, last_row, tally.without_messages().to_json()])
        self._dirty = True
        self.flush()

    def chunk_completed(self, chunk_index: int, digest: str, tally: Tally) -> None:
        """
        Record that every row of a chunk is accounted for. Its messages were recorded with its batches.
        """
        self._chunks[str(chunk_index)] = {
            "digest": digest,
            "complete": True,
            "tally": tally.without_messages().to_json(),
        }
        self._dirty = True
        self.flush(force=True)

    def flush(self, *, force: bool = False) -> None:
        """Write the progress to the store, at most every ``min_interval`` seconds unless forced."""
        if self.store is None or not self._dirty:
            return
        now = time.monotonic()
        if not force and now - self._last_write < self.min_interval:
            return
        state = {"fingerprint": self.fingerprint, "chunks": self._chunks, "messages": self.messages.to_json()}
        self._call_store("save", self.store.set, STATE_KEY, state)
        self._last_write = now
        self._dirty = False

    def finish(self) -> None:
        """Forget the progress once the run succeeded, so that a later manual re-run sends afresh."""
        if self.store is not None:
            self._call_store("clear", self.store.delete, STATE_KEY)

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
