"""
The ledger of a run: the one writer of where rows end.

Every settlement (rows refused before sending, rows the delivery log holds as delivered, Gravity's answer to a
batch, rows left unsent, what an earlier try settled) reaches the run as one :class:`Settlement`, and
:meth:`Ledger.settle` is the only code that updates the chunk's and the run's tallies, writes the delivery log
and records acknowledged progress in the resume state. So each row is counted in one place, and whether a
chunk adds up (each of its rows in one bucket) is checked in one place too, when the chunk closes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from airflow_provider_gravity.conversions.buckets import Bucket
from airflow_provider_gravity.conversions.run.delivery_log import DeliveryLog, DeliveryRecord
from airflow_provider_gravity.conversions.run.resume import ResumeLog
from airflow_provider_gravity.conversions.run.tally import Tally

log = logging.getLogger(__name__)

#: Counters a run keeps before summing its rarest messages from Gravity.
MOST_COUNTERS = 2_000
_BUCKET_PREFIX = "bucket."


@dataclass(frozen=True)
class Settlement:
    """
    Rows of one chunk that reached their bucket, and what is written of them.

    :param tally: their counters: buckets and reasons, and what goes with them (field drops, coverage, ...).
    :param records: their rows for the delivery log (dead letters, Gravity's outcomes).
    :param acknowledged: row ranges of the chunk now settled, each with its counters, for the resume state.
    :param ends_batch: the settlement closes one batch submitted for the chunk.
    """

    tally: Tally
    records: Sequence[DeliveryRecord] = ()
    acknowledged: Sequence[tuple[int, int, Tally]] = ()
    ends_batch: bool = False


@dataclass
class _Chunk:
    digest: str
    rows: int
    tally: Tally = field(default_factory=Tally)
    pending_batches: int = 0
    submitted_all: bool = False


class Ledger:
    """
    The tallies of a run and of its open chunks, with the delivery log and the resume state they are written to.

    :param delivery_log: where settled events are recorded; ``None`` for none.
    :param resume: where acknowledged progress is recorded, for a retry to skip.
    :param run_id: recorded in the delivery log.
    """

    def __init__(self, *, delivery_log: DeliveryLog | None, resume: ResumeLog, run_id: str) -> None:
        self.tally = Tally()
        self._delivery_log = delivery_log
        self._resume = resume
        self._run_id = run_id
        self._chunks: dict[int, _Chunk] = {}
        #: ``(chunk, rows, rows settled)`` of each chunk closed with a row in no bucket or in two: none, ever.
        self.mismatches: list[tuple[int, int, int]] = []

    def add_to_run(self, tally: Tally) -> None:
        """
        Counters of the run that belong to no open chunk: a chunk an earlier try settled whole, a chunk read
        after sending stopped, Gravity's messages about what an earlier try settled.
        """
        self._add_to_run(tally)

    def open_chunk(self, index: int, digest: str, rows: int) -> None:
        """Start accounting for chunk ``index`` of ``rows`` rows (``digest``: its keys, for the resume state)."""
        self._chunks[index] = _Chunk(digest, rows)

    def settle(self, index: int, settlement: Settlement) -> None:
        """
        Count a settlement in its chunk and in the run, write its delivery-log rows and its acknowledged ranges,
        and close the chunk when this was its last batch.
        """
        chunk = self._chunks[index]
        chunk.tally.update(settlement.tally)
        self._add_to_run(settlement.tally)
        if settlement.ends_batch:
            chunk.pending_batches -= 1
        if settlement.records and self._delivery_log is not None:
            self._delivery_log.record(settlement.records, run_id=self._run_id)
        for first, last, tally in settlement.acknowledged:
            self._resume.batch_acknowledged(index, chunk.digest, first, last, tally)
        if settlement.ends_batch:
            self._close_if_done(index)

    def batch_submitted(self, index: int) -> None:
        """Record that a batch of chunk ``index`` is on its way: the chunk stays open until it is settled."""
        self._chunks[index].pending_batches += 1

    def chunk_submitted(self, index: int) -> None:
        """Every batch of chunk ``index`` is submitted; the chunk closes when the last one is settled."""
        self._chunks[index].submitted_all = True
        self._close_if_done(index)

    def settled_rows(self) -> int:
        """Count the rows of the run in a bucket so far."""
        return _rows_in(self.tally)

    def _close_if_done(self, index: int) -> None:
        chunk = self._chunks[index]
        if not chunk.submitted_all or chunk.pending_batches:
            return
        del self._chunks[index]
        settled = _rows_in(chunk.tally)
        if settled != chunk.rows:
            self.mismatches.append((index, chunk.rows, settled))
            log.error(
                "Chunk %d closed with %d of its %d rows in a bucket: the summary does not add up.",
                index,
                settled,
                chunk.rows,
            )
        if not chunk.tally[f"{_BUCKET_PREFIX}{Bucket.UNDELIVERED}"]:
            self._resume.chunk_completed(index, chunk.digest, chunk.tally)

    def _add_to_run(self, tally: Tally) -> None:
        self.tally.update(tally)
        if len(self.tally) > MOST_COUNTERS:  # thousands of distinct messages from Gravity
            self.tally.compact_messages(keep=MOST_COUNTERS // 4)


def _rows_in(tally: Tally) -> int:
    return sum(count for key, count in tally.items() if key.startswith(_BUCKET_PREFIX))
