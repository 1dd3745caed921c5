"""
One run: chunks of rows in, a summary out. Validates and builds events, drops in-run duplicates, skips
what the delivery log says was delivered, sends batches in parallel and accounts for every row, also when
the run stops early: whatever Gravity acknowledged is recorded before the failure is reported.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa

from airflow_provider_gravity.conversions.api.outcomes import Outcome, send_with_split
from airflow_provider_gravity.conversions.api.sender import EventSender
from airflow_provider_gravity.conversions.buckets import DELIVERED_BUCKETS, Bucket
from airflow_provider_gravity.conversions.encoded_event import EncodedEvents
from airflow_provider_gravity.conversions.errors import GravityError, GravityResponseError, GravityUnavailableError
from airflow_provider_gravity.conversions.events.build import BuiltChunk, EventSettings, build_events, event_keys
from airflow_provider_gravity.conversions.pii.user_fields import PiiCache
from airflow_provider_gravity.conversions.read.prepare import PreparedChunk, prepare_chunk
from airflow_provider_gravity.conversions.run.arrow_memory import run_memory_pool
from airflow_provider_gravity.conversions.run.delivery_log import DeliveryLog, DeliveryRecord, fit_key
from airflow_provider_gravity.conversions.run.ledger import Ledger, Settlement
from airflow_provider_gravity.conversions.run.resume import ResumeLog, chunk_digest
from airflow_provider_gravity.conversions.run.seen_keys import SeenKeys
from airflow_provider_gravity.conversions.run.summary import RunSummary
from airflow_provider_gravity.conversions.run.tally import Tally, build_summary

log = logging.getLogger(__name__)

# Distinct phones remembered, all regions together: enough for the repeat customers of a night, and a bound on
# memory (about 70 bytes an entry, under 20 MB at most) whatever the number of rows and regions.
PII_CACHE_ENTRIES = 250_000
# Arrow's freed pages go back to the system once this many rows were read since they last did. Giving them back
# after every chunk of 10,000 rows kept the task's peak 4 MB lower at 1,000,000 rows, but each chunk then faulted
# its pages in again: a fifth of the run's time at 10,000,000 rows (27.9 s of system time against 12.3).
RELEASE_MEMORY_EVERY_ROWS = 100_000


#: Gravity's messages about rows an earlier try settled, when they cannot be told apart.
EARLIER_TRY_MESSAGES = "(messages of an earlier try)"
#: Event ids named in the log line about changed payloads.
_CHANGED_IDS_LOGGED = 10


@dataclass(frozen=True)
class RunFailure:
    """
    Why a run did not deliver every row.

    :param message: what went wrong, for the task log (never holds the API key or PII).
    :param retryable: whether a retry of the task can succeed (Gravity unavailable, results missing), or the
        configuration must change first (a bad key, a redirect, an unexpected HTTP status).
    """

    message: str
    retryable: bool


@dataclass
class RunResult:
    """
    The outcome of a run.

    :param summary: the JSON-ready run summary; it adds up whether or not the run failed.
    :param failure: why rows stayed ``undelivered``, or ``None`` when every row is settled.
    :param preview: the first events as they would be sent (hashed PII only), for dry runs.
    """

    summary: RunSummary
    failure: RunFailure | None = None
    preview: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Batch:
    chunk_index: int
    events: EncodedEvents
    rows: list[int]
    coverage: np.ndarray  # each event's match-key bits (int64)
    payload_hashes: list[str | None]
    # Rows between the batch's first and last row that were settled locally (invalid, already delivered),
    # with their (bucket, reason): saved with the batch's acknowledgement, because a resumed try skips the
    # whole acknowledged row range.
    local_rows: dict[int, tuple[str, str | None]] = field(default_factory=dict)


class ConversionPipeline:
    """
    Sends the rows of a query to Gravity, chunk by chunk, and accounts for every row.

    :param settings: how rows become events.
    :param sender: sends batches and counts its requests and retries (the Gravity client); ``None`` for a dry
        run.
    :param batch_size: events per request (at most 1,000).
    :param max_concurrency: requests in flight at once.
    :param delivery_log: remembers delivered events across runs; ``None`` to rely on Gravity's 48 h dedup.
        An event it holds as delivered is never sent again, even when its payload changed: Gravity cannot
        update a conversion, so a changed event is counted (``changed_since_delivery``) and logged instead.
    :param resume: records and restores acknowledged progress across task retries.
    :param run_id: recorded in the delivery log.
    :param progress_interval: seconds between two progress lines in the log.
    :param preview_size: events kept for the dry-run preview.
    :param clock: the run's reference time (Unix seconds) for event-age checks.
    """

    def __init__(
        self,
        *,
        settings: EventSettings,
        sender: EventSender | None,
        batch_size: int = 1_000,
        max_concurrency: int = 4,
        delivery_log: DeliveryLog | None = None,
        resume: ResumeLog | None = None,
        run_id: str = "manual",
        progress_interval: float = 10.0,
        preview_size: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.sender = sender
        self.batch_size = batch_size
        self.max_concurrency = max(1, max_concurrency)
        self.delivery_log = delivery_log
        self.resume = resume or ResumeLog(None, "")
        self.run_id = run_id
        self.progress_interval = progress_interval
        self.preview_size = preview_size
        self.clock = clock
        self.ledger = Ledger(delivery_log=delivery_log, resume=self.resume, run_id=run_id)
        self.seen = SeenKeys()
        self.pii_cache = PiiCache(max_entries=PII_CACHE_ENTRIES)
        self.preview: list[dict[str, Any]] = []
        self.failure: RunFailure | None = None
        self._counting_unsent = False
        self._changed_ids: list[str] = []
        self._in_flight: dict[Future[tuple[list[Outcome], Exception | None]], _Batch] = {}
        self._rows_read = 0
        self._rows_at_release = 0
        self._started = self._last_progress = time.monotonic()

    def run(self, chunks: Iterable[pd.DataFrame]) -> RunResult:
        """Process every chunk, wait for every request, and return the summary."""
        with run_memory_pool() as memory_pool:
            return self._run(chunks, memory_pool)

    def _run(self, chunks: Iterable[pd.DataFrame], memory_pool: pa.MemoryPool) -> RunResult:
        self._started = self._last_progress = time.monotonic()
        now = self.clock()
        earlier_messages = Tally(self.resume.messages)  # Gravity's words on the parts an earlier try settled
        executor = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="gravity-send")
        # The objects alive before the run (Airflow's, the task's: hundreds of thousands) outlive it: kept out
        # of the collector's scans while it runs, the millions of short-lived objects of a run cost 16 % less.
        gc.freeze()
        try:
            for index, frame in enumerate(chunks):
                chunk = prepare_chunk(frame)
                self._rows_read += len(frame)
                if self.failure:  # nothing more is sent, but every row read still ends in a bucket
                    self._account_unsent_chunk(index, chunk)
                    continue
                self._process_chunk(index, chunk, now, executor)
                if self._rows_read - self._rows_at_release >= RELEASE_MEMORY_EVERY_ROWS:
                    memory_pool.release_unused()  # the chunks' columns are gone
                    self._rows_at_release = self._rows_read
                self._log_progress()
            while self._in_flight:
                self._collect(wait_for_one=True)
        except BaseException as error:
            # The warehouse dropped, the delivery log failed, the task was stopped: Gravity may hold events
            # whose answers are on their way. Each is accounted and logged before the error goes on.
            self._settle_after_stop(error)
            raise
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
            gc.unfreeze()
        undelivered = self.ledger.tally["bucket.undelivered"]
        if self.failure is None and undelivered and self.sender is not None:
            self.failure = RunFailure(
                f"{undelivered:,} events got no result from Gravity (left out of its answer, or answered twice "
                "with different statuses); they are not known to be delivered",
                retryable=True,
            )
        if self.failure is None:
            self.resume.finish()
        else:
            self.resume.flush(force=True)
        self._add_earlier_messages(earlier_messages)
        self._log_changed()
        return RunResult(self.summary(), self.failure, self.preview)

    def summary(self) -> RunSummary:
        """
        Return the run summary so far. After a run that raised, rows read but not yet settled count as
        ``undelivered``, so that the summary still adds up to the rows read.
        """
        tally = Tally(self.ledger.tally)
        settled = self.ledger.settled_rows()
        if self._rows_read > settled:
            tally["bucket.undelivered"] += self._rows_read - settled
        summary = build_summary(
            tally,
            requests=self.sender.requests_sent if self.sender else 0,
            retries=self.sender.retries if self.sender else 0,
            seconds=time.monotonic() - self._started,
            dry_run=self.sender is None,
        )
        if self.resume.chunks_skipped:
            summary["resumed_chunks"] = self.resume.chunks_skipped
        return summary

    @staticmethod
    def empty_summary() -> RunSummary:
        """Return the summary of a try that stopped before its run began: every counter zero."""
        return build_summary(Tally(), requests=0, retries=0, seconds=0.0, dry_run=False)

    def _settle_after_stop(self, error: BaseException) -> None:
        """
        Account for the batches in flight when ``error`` stopped the run: batches not started are cancelled
        (their rows stay ``undelivered``), the others are awaited and their answers counted and written to the
        delivery log and the resume state, as in a run that ends normally. A failure while writing one batch
        is logged and does not stop the others.
        """
        if self.failure is None:
            self.failure = RunFailure(f"the run stopped with {type(error).__name__}", retryable=True)
        for future, batch in list(self._in_flight.items()):
            if future.cancel():
                del self._in_flight[future]
                self.ledger.settle(batch.chunk_index, Settlement(_undelivered(len(batch.events)), ends_batch=True))
        if self._in_flight:
            log.warning(
                "The run stopped (%s); waiting for the answers of the %d batches Gravity is handling, to record them.",
                type(error).__name__,
                len(self._in_flight),
            )
        while self._in_flight:
            done, _ = wait(list(self._in_flight), return_when=FIRST_COMPLETED)
            for future in done:
                batch = self._in_flight.pop(future)
                outcomes, _send_error = future.result()
                try:
                    self._account_batch(batch, outcomes)
                except Exception as write_error:  # noqa: BLE001 - the first error is the one raised
                    log.error(
                        "Recording the answer to a batch of %d events failed with %s after the run stopped.",
                        len(batch.events),
                        type(write_error).__name__,
                    )
        try:
            self.resume.flush(force=True)  # what was acknowledged and logged so far
        except Exception as flush_error:  # noqa: BLE001 - the first error is the one raised
            log.error("Saving the resume state failed with %s after the run stopped.", type(flush_error).__name__)

    def _process_chunk(self, index: int, chunk: PreparedChunk, now: float, executor: ThreadPoolExecutor) -> None:
        if self._in_flight:
            self._collect(wait_for_one=False)
        built = build_events(chunk, self.settings, now, self.pii_cache)
        digest = chunk_digest(built.event_names, built.event_ids)
        valid = self._drop_in_run_duplicates(built)
        saved = self.resume.restore(index, digest)
        if saved is not None and saved.complete:
            self.ledger.add_to_run(saved.tally)
            return
        self.ledger.open_chunk(index, digest, len(built.encoded))
        if saved is not None:
            self.ledger.settle(index, Settlement(saved.tally))  # the row ranges an earlier try settled
        self.ledger.settle(index, Settlement(_field_drops(built)))
        to_send, settled = self._account_local_rows(index, built, valid, saved.ranges if saved else [])
        coverage = np.asarray(built.coverage, dtype=np.int64)
        for rows in _batches(to_send, built.event_ids, self.batch_size):
            events = built.encoded_events(rows)
            hashes: list[str | None] = (
                list(map(_payload_hash, events.texts)) if self.delivery_log else [None] * len(events)
            )
            local_rows: dict[int, tuple[str, str | None]] = {}
            if not _without_gaps(rows):  # some rows of the range were settled here
                local_rows = cast(
                    "dict[int, tuple[str, str | None]]",
                    {row: settled[row] for row in range(rows[0], rows[-1] + 1) if settled[row] is not None},
                )
            self._submit(executor, _Batch(index, events, rows, _of_rows(coverage, rows), hashes, local_rows))
        self.ledger.chunk_submitted(index)

    def _account_unsent_chunk(self, index: int, chunk: PreparedChunk) -> None:
        """
        After a failure, a chunk still to read is not sent: what an earlier try settled of it keeps its
        counters (and its resume state), every other row is ``undelivered``, for the retry to send.
        """
        if not self._counting_unsent:
            self._counting_unsent = True
            log.warning("Sending stopped; the rows left are read and counted, not sent.")
        event_names, event_ids = event_keys(chunk, self.settings)
        saved = self.resume.restore(index, chunk_digest(event_names, event_ids))
        rows = len(chunk.frame)
        settled = 0
        if saved is not None:
            self.ledger.add_to_run(saved.tally)
            settled = rows if saved.complete else sum(last - first + 1 for first, last in saved.ranges)
        self.ledger.add_to_run(_undelivered(rows - settled))

    def _add_earlier_messages(self, earlier: Tally) -> None:
        """
        Gravity's messages about the rows an earlier try settled. Kept for the run, not per chunk, they are
        exact only when every saved part was restored; after a change of row order they are summed as one.
        """
        if not self.resume.restored_rejected:
            return
        if self.resume.order_changed or earlier.total() != self.resume.restored_rejected:
            self.ledger.add_to_run(Tally({f"rejected.{EARLIER_TRY_MESSAGES}": self.resume.restored_rejected}))
        else:
            self.ledger.add_to_run(earlier)

    def _drop_in_run_duplicates(self, built: BuiltChunk) -> np.ndarray:
        """Refuse the valid rows whose key came earlier in the run (``duplicate_in_run``); return those left valid."""
        names, ids = built.event_names, built.event_ids
        if built.reasons.count(None) == len(built.reasons):  # nearly every chunk: no invalid row, no list to pick
            valid = np.ones(len(built.reasons), dtype=bool)
            valid_rows = np.arange(len(built.reasons))
        else:
            valid = np.not_equal(np.asarray(built.encoded, dtype=object), None)  # type: ignore[call-overload]
            valid_rows = np.flatnonzero(valid)
            picked = valid_rows.tolist()
            names, ids = list(map(names.__getitem__, picked)), list(map(ids.__getitem__, picked))
        first = self.seen.first_occurrence_mask(names, ids)
        if first.all():
            return valid
        for row in valid_rows[~first].tolist():
            built.encoded[row] = None
            built.coverage[row] = 0
            built.reasons[row] = "duplicate_in_run"
            valid[row] = False
        return valid

    def _account_local_rows(
        self, index: int, built: BuiltChunk, valid: np.ndarray, acked: list[tuple[int, int]]
    ) -> tuple[list[int], list[tuple[str, str | None] | None]]:
        """
        Settle the rows settled here (invalid, already delivered), skipping the row ranges an earlier try had
        acknowledged. Return the rows left to send, and each row's local ``(bucket, reason)`` or ``None``.

        :param valid: which rows have an event to send.
        """
        rows = len(built.encoded)
        settled: list[tuple[str, str | None] | None] = [None] * rows
        open_rows = np.ones(rows, dtype=bool)
        for first, last in acked:
            open_rows[first : last + 1] = False
        candidates = np.flatnonzero(open_rows & valid).tolist()
        invalid = Tally()
        dead_letters: list[DeliveryRecord] = []
        for row in np.flatnonzero(open_rows & ~valid).tolist():  # invalid rows, one by one: few
            reason = built.reasons[row]
            settled[row] = (Bucket.INVALID, reason)
            invalid.count_row(Bucket.INVALID, reason)
            if reason != "duplicate_in_run" and built.event_ids[row] and built.event_names[row]:
                key = (fit_key(cast(str, built.event_names[row])), fit_key(cast(str, built.event_ids[row])))
                dead_letters.append(DeliveryRecord(*key, Bucket.INVALID, reason, None))
        self.ledger.settle(index, Settlement(invalid, dead_letters))
        if self.delivery_log is None:
            return candidates, settled
        skipped = Tally()
        to_send = self._skip_delivered(built, candidates, settled, skipped)
        if len(to_send) < len(candidates):
            skipped.count_row(Bucket.SKIPPED_DELIVERED, None, len(candidates) - len(to_send))
        self.ledger.settle(index, Settlement(skipped))
        return to_send, settled

    def _skip_delivered(
        self,
        built: BuiltChunk,
        candidates: list[int],
        settled: list[tuple[str, str | None] | None],
        skipped: Tally,
    ) -> list[int]:
        """
        Return the candidates the delivery log does not hold as delivered. A delivered event whose payload changed
        since is not sent again (it would be a second conversion, or a ``duplicate`` Gravity ignores): it is
        counted in ``skipped`` as ``changed_since_delivery`` and named in the log.
        """
        assert self.delivery_log is not None
        # Candidates are valid rows: each has its name, its id and its JSON text.
        names, ids, texts = cast(
            "tuple[list[str], list[str], list[str]]", (built.event_names, built.event_ids, built.encoded)
        )
        logged = self.delivery_log.lookup([(names[r], ids[r]) for r in candidates])
        to_send = []
        for row in candidates:
            entry = logged.get((names[row], ids[row]))
            if entry is None or entry.status not in DELIVERED_BUCKETS:
                to_send.append(row)
                continue
            settled[row] = (Bucket.SKIPPED_DELIVERED, None)
            if entry.payload_sha256 is not None and entry.payload_sha256 != _payload_hash(texts[row]):
                skipped["changed_since_delivery"] += 1
                if len(self._changed_ids) < _CHANGED_IDS_LOGGED:
                    self._changed_ids.append(str(built.event_ids[row]))
        return to_send

    def _submit(self, executor: ThreadPoolExecutor, batch: _Batch) -> None:
        if self.sender is None:
            self.ledger.settle(batch.chunk_index, Settlement(_undelivered(len(batch.events))))
            wanted = batch.events.texts[: self.preview_size - len(self.preview)]
            self.preview.extend(map(json.loads, wanted))
            return
        if self._in_flight:
            # Record what Gravity answered as soon as the answer is here: a try killed now re-sends only
            # the batches still on the wire, not those answered while this thread was building events.
            self._collect(wait_for_one=False)
        while len(self._in_flight) >= self.max_concurrency * 2:
            self._collect(wait_for_one=True)
        if self.failure:  # Gravity is down or refuses us: count the rest of the chunk instead of sending it
            self.ledger.settle(batch.chunk_index, Settlement(_undelivered(len(batch.events))))
            return
        self.ledger.batch_submitted(batch.chunk_index)
        self._in_flight[executor.submit(send_with_split, self.sender.send_events, batch.events)] = batch

    def _collect(self, *, wait_for_one: bool) -> None:
        if wait_for_one:
            done: Iterable[Future[tuple[list[Outcome], Exception | None]]]
            done, _ = wait(list(self._in_flight), return_when=FIRST_COMPLETED)
        else:  # called before each batch is submitted: a look at each future, without setting up a wait
            done = [future for future in self._in_flight if future.done()]
        for future in done:
            batch = self._in_flight.pop(future)
            outcomes, error = future.result()
            if error is not None:
                self._stop(error)
            self._account_batch(batch, outcomes)
        self._log_progress()

    def _stop(self, error: Exception) -> None:
        """Stop sending after ``error``; the first error of the run is the one reported."""
        if self.failure is not None:
            return
        retryable = isinstance(error, GravityUnavailableError | GravityResponseError)
        if isinstance(error, GravityError):
            message = str(error)
        else:  # not Gravity's answer but a fault here: name it without its text, which might hold a cell
            message = f"sending a batch failed with {type(error).__name__}"
            log.error("Sending a batch failed with %s; no more batches are sent.", type(error).__name__)
        self.failure = RunFailure(message, retryable)

    def _account_batch(self, batch: _Batch, outcomes: list[Outcome]) -> None:
        kinds = _kinds_of(outcomes)
        batch_tally = _outcome_tally(kinds, outcomes, batch.coverage)
        records: list[DeliveryRecord] = []
        if self.delivery_log is not None:
            records = [
                DeliveryRecord(
                    fit_key(name),
                    fit_key(event_id),
                    outcome.bucket,
                    outcome.status_text,
                    digest if outcome.bucket == Bucket.DELIVERED else None,  # only a payload Gravity accepted
                )
                for name, event_id, outcome, digest in zip(
                    batch.events.event_names, batch.events.event_ids, outcomes, batch.payload_hashes, strict=True
                )
                if outcome.bucket != Bucket.UNDELIVERED
            ]
        all_answered = all(outcome.bucket != Bucket.UNDELIVERED for outcome in kinds)
        acknowledged = list(_acknowledged_ranges(batch, outcomes, batch_tally, all_answered))
        self.ledger.settle(batch.chunk_index, Settlement(batch_tally, records, acknowledged, ends_batch=True))

    def _log_progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress < self.progress_interval:
            return
        self._last_progress = now
        elapsed = max(now - self._started, 1e-9)
        log.info(
            "Progress: %s rows read, %s events sent, %s delivered, %s rejected, %s invalid, %.0f rows/s",
            f"{self._rows_read:,}",
            f"{self.ledger.tally['sent']:,}",
            f"{self.ledger.tally['bucket.delivered']:,}",
            f"{self.ledger.tally['bucket.rejected']:,}",
            f"{self.ledger.tally['bucket.invalid']:,}",
            self._rows_read / elapsed,
        )

    def _log_changed(self) -> None:
        changed = self.ledger.tally["changed_since_delivery"]
        if not changed:
            return
        log.warning(
            "%s events were delivered earlier with other values and were not sent again (Gravity cannot update "
            "a conversion; see 'Correcting a conversion' in the README). First event ids: %s",
            f"{changed:,}",
            ", ".join(self._changed_ids),
        )


def _batches(rows: list[int], event_ids: list[str | None], batch_size: int) -> Iterator[list[int]]:
    """
    Consecutive runs of ``rows`` (ascending) of at most ``batch_size``, never with two events of the same ``event_id``
    (under two event names): Gravity's results name the ``event_id`` only, so their outcomes could swap.
    A batch ends early where an id repeats; batches stay ranges of rows, as resuming needs.
    """
    if not rows:
        return
    if _without_gaps(rows):  # the ids are a slice
        ids = event_ids[rows[0] : rows[-1] + 1]
    else:
        ids = list(map(event_ids.__getitem__, rows))
    if len(set(ids)) == len(ids):  # nearly always: no id repeats in the chunk, batches are plain slices
        for start in range(0, len(rows), batch_size):
            yield rows[start : start + batch_size]
        return
    batch: list[int] = []
    seen: set[str | None] = set()
    for row, event_id in zip(rows, ids, strict=True):
        if len(batch) == batch_size or event_id in seen:
            yield batch
            batch, seen = [], set()
        batch.append(row)
        seen.add(event_id)
    if batch:
        yield batch


def _kinds_of(outcomes: list[Outcome]) -> Counter[Outcome]:
    """Count the distinct outcomes of a batch: a handful, nearly always one (delivered), the same object each time."""
    if outcomes and outcomes.count(outcomes[0]) == len(outcomes):  # compared by identity first: no tuple hashed
        return Counter({outcomes[0]: len(outcomes)})
    return Counter(outcomes)


def _outcome_tally(kinds: Counter[Outcome], outcomes: Sequence[Outcome], coverages: np.ndarray) -> Tally:
    """
    Count the sent events: their buckets and reasons, attributions, and the match keys of those sent.

    :param kinds: how many events had each outcome, counted once for the batch.
    """
    tally = Tally()
    attributed = 0
    for outcome, rows in kinds.items():
        tally.count_row(outcome.bucket, outcome.detail, rows)
        attributed += rows if outcome.attributed else 0
    tally["attributed"] += attributed
    if all(outcome.sent for outcome in kinds):
        tally.count_sent(coverages)
    else:
        tally.count_sent(
            coverages[np.fromiter((outcome.sent for outcome in outcomes), dtype=bool, count=len(outcomes))]
        )
    return tally


def _acknowledged_ranges(
    batch: _Batch, outcomes: list[Outcome], batch_tally: Tally, all_answered: bool
) -> Iterator[tuple[int, int, Tally]]:
    """
    Yield the row ranges of a batch that are settled, each with its counters: the whole batch when every event
    got an answer (``all_answered``: ``batch_tally`` and the rows settled here), else the stretches between the
    events left ``undelivered``, so that a resumed try sends only those.
    """
    if all_answered:
        tally = Tally(batch_tally)
        tally.count_outcomes(batch.local_rows.values())
        yield batch.rows[0], batch.rows[-1], tally
        return
    unsettled = [row for row, outcome in zip(batch.rows, outcomes, strict=True) if outcome.bucket == Bucket.UNDELIVERED]
    rows_outcome = dict(zip(batch.rows, outcomes, strict=True))
    bounds = [batch.rows[0] - 1, *unsettled, batch.rows[-1] + 1]
    for before, after in itertools.pairwise(bounds):
        first, last = before + 1, after - 1
        if first > last:
            continue
        tally = Tally()
        for row in range(first, last + 1):
            outcome = rows_outcome.get(row)
            if outcome is not None:
                tally.count_row(outcome.bucket, outcome.detail)
                tally["attributed"] += int(outcome.attributed)
            elif row in batch.local_rows:
                tally.count_row(*batch.local_rows[row])
        tally.count_sent(
            [
                coverage
                for row, coverage, outcome in zip(batch.rows, batch.coverage, outcomes, strict=True)
                if first <= row <= last and outcome.sent
            ]
        )
        yield first, last, tally


def _of_rows(values: np.ndarray, rows: list[int]) -> np.ndarray:
    """Return the values of ascending ``rows``: a slice when they are consecutive, as nearly every batch's are."""
    if _without_gaps(rows):
        return values[rows[0] : rows[-1] + 1]
    return values[rows]


def _without_gaps(rows: list[int]) -> bool:
    """Whether ascending, distinct ``rows`` (at least one) are every row from the first to the last."""
    return rows[-1] - rows[0] + 1 == len(rows)


def _undelivered(rows: int) -> Tally:
    """Return the counters of ``rows`` events left unsent or without an answer."""
    tally = Tally()
    tally.count_row(Bucket.UNDELIVERED, None, rows)
    return tally


def _field_drops(built: BuiltChunk) -> Tally:
    """Field-level drops (``invalid_email``, ...) of a chunk, as tally counters."""
    return Tally({f"drop.{reason}": count for reason, count in built.field_drops.items()})


def _payload_hash(event_json: str) -> str:
    """Return the delivery log's hash of an event: of its canonical JSON, the very text sent."""
    return hashlib.sha256(event_json.encode("ascii")).hexdigest()
