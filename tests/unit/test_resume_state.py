"""Resume state (issue 18): one key a chunk and a small index, so each write costs the same at any chunk."""

from __future__ import annotations

import hashlib
import json

import pandas as pd

from airflow_provider_gravity.conversions.api.wire import EventResult
from airflow_provider_gravity.conversions.errors import GravityUnavailableError
from airflow_provider_gravity.conversions.events.build import EventSettings
from airflow_provider_gravity.conversions.run.pipeline import ConversionPipeline
from airflow_provider_gravity.conversions.run.resume import STATE_KEY, ResumeLog, chunk_digest, chunk_key
from airflow_provider_gravity.conversions.run.tally import Tally


class RecordingStore:
    """The task state store's contract over a dict, counting the writes and the JSON bytes they carry."""

    def __init__(self) -> None:
        self.values: dict = {}
        self.writes: list[int] = []  # JSON bytes of each set
        self.reads = 0
        self.deletes = 0

    def get(self, key, default=None):
        self.reads += 1
        return json.loads(json.dumps(self.values[key])) if key in self.values else default

    def set(self, key, value):
        text = json.dumps(value)
        self.writes.append(len(text))
        self.values[key] = json.loads(text)

    def delete(self, key):
        self.deletes += 1
        self.values.pop(key, None)


class FunctionSender:
    """A sender made of a function of the events as dicts."""

    def __init__(self, function) -> None:
        self.function = function
        self.requests_sent = 0
        self.retries = 0

    def send_events(self, events):
        self.requests_sent += 1
        return self.function([json.loads(event.json) for event in events])


def record_chunks(log: ResumeLog, chunks: int, *, batches: int = 3) -> None:
    """What a run records: each chunk's batches acknowledged one by one (one refused event each), then the chunk."""
    for index in range(chunks):
        digest = chunk_digest(["Purchase"] * 30, [f"{index}-{row}" for row in range(30)])
        for batch in range(batches):
            tally = Tally({"bucket.delivered": 9, "bucket.rejected": 1, f"rejected.bad field {index % 50}": 1})
            log.batch_acknowledged(index, digest, 10 * batch, 10 * batch + 9, tally)
        log.chunk_completed(index, digest, Tally({"bucket.delivered": 27, "bucket.rejected": 3, "sent": 30}))


def test_bytes_written_grow_with_the_chunks_not_with_their_square():
    totals, largest = {}, {}
    for chunks in (100, 400, 1_600):
        store = RecordingStore()
        record_chunks(ResumeLog(store, "query-1", min_interval=0), chunks)
        totals[chunks], largest[chunks] = sum(store.writes), max(store.writes)

    assert 3.5 < totals[400] / totals[100] < 4.5, totals
    assert 3.5 < totals[1_600] / totals[400] < 4.5, totals
    # No write carries the chunks before it: the largest grows only by the digits of its counters.
    assert largest[1_600] <= largest[100] + 40, largest
    assert totals[1_600] < 1_600 * 5 * 800, "a few hundred bytes a write"


def test_a_pipeline_run_writes_the_same_bytes_a_chunk_at_any_size():
    def run(chunks: int) -> RecordingStore:
        store = RecordingStore()
        frames = [
            pd.DataFrame({"event_id": [f"e{c}-{i}" for i in range(20)], "event_time": [1_767_225_600] * 20})
            for c in range(chunks)
        ]

        def fail_the_last_chunk(events):  # so that the run keeps its state (a run that succeeds clears it)
            if events[0]["event_id"].startswith(f"e{chunks - 1}-"):
                raise GravityUnavailableError(1, 503, "HTTP 503")
            return [EventResult(e["event_id"], "ok") for e in events]

        pipeline = ConversionPipeline(
            settings=EventSettings(event_name="Lead"),
            sender=FunctionSender(fail_the_last_chunk),
            batch_size=10,
            max_concurrency=1,
            resume=ResumeLog(store, "query-1", min_interval=0),
            clock=lambda: 1_767_230_000,
        )
        assert pipeline.run(frames).failure
        return store

    small, large = run(20), run(160)
    assert 7 < sum(large.writes) / sum(small.writes) < 9
    assert max(large.writes) <= max(small.writes) + 10


def test_a_retry_reads_each_chunk_when_it_comes_and_skips_what_was_acknowledged():
    store = RecordingStore()
    first_try = ResumeLog(store, "query-1", min_interval=0)
    first_try.chunk_completed(0, "d0", Tally({"bucket.delivered": 2}))
    first_try.batch_acknowledged(1, "d1", 0, 4, Tally({"bucket.delivered": 5, "rejected.bad": 1}))
    first_try.chunk_completed(5, "d5", Tally({"bucket.delivered": 7}))
    assert {chunk_key(0), chunk_key(1), chunk_key(5), STATE_KEY} == set(store.values)

    store.reads = 0
    retry = ResumeLog(store, "query-1", min_interval=0)
    assert store.reads == 1, "only the index is read up front"
    assert retry.messages == Tally({"rejected.bad": 1})
    assert retry.restore(0, "d0").tally["bucket.delivered"] == 2
    partial = retry.restore(1, "d1")
    assert not partial.complete and partial.ranges == [(0, 4)]
    assert retry.restore(2, "d2") is None and retry.resuming, "a chunk the first try never recorded"
    assert retry.restore(5, "d5").complete
    assert store.reads == 5

    # The retry adds its batches to the partial chunk, then completes it; a third try sees both.
    retry.batch_acknowledged(1, "d1", 5, 9, Tally({"bucket.delivered": 5}))
    third = ResumeLog(store, "query-1")
    assert third.restore(1, "d1").ranges == [(0, 4), (5, 9)]

    retry.finish()
    assert store.values == {}


def test_after_a_change_of_row_order_the_later_chunks_are_dropped_for_every_later_try():
    store = RecordingStore()
    first_try = ResumeLog(store, "query-1", min_interval=0)
    for index in range(4):
        first_try.chunk_completed(index, f"d{index}", Tally({"bucket.delivered": 1}))

    moved = ResumeLog(store, "query-1", min_interval=0)
    assert moved.restore(0, "d0").complete
    assert moved.restore(1, "other rows") is None
    assert moved.order_changed and not moved.resuming
    assert moved.restore(2, "d2") is None, "after one mismatch nothing more is skipped"
    assert {chunk_key(0), STATE_KEY} == set(store.values), "the later chunks' progress is gone from the store"
    moved.chunk_completed(1, "other rows", Tally({"bucket.delivered": 1}))

    later = ResumeLog(store, "query-1")
    assert later.restore(0, "d0").complete
    assert later.restore(1, "other rows").complete
    assert later.restore(2, "d2") is None


def test_a_state_of_the_earlier_layout_is_resumed_and_rewritten_in_this_one():
    store = RecordingStore()
    store.values[STATE_KEY] = {
        "fingerprint": "query-1",
        "chunks": {
            "0": {"digest": "d0", "complete": True, "tally": {"bucket.delivered": 2}},
            "1": {"digest": "d1", "ranges": [[0, 4, {"bucket.delivered": 5}]]},
        },
        "messages": {"rejected.bad": 1},
    }

    retry = ResumeLog(store, "query-1", min_interval=0)
    assert retry.restore(0, "d0").complete
    retry.batch_acknowledged(1, "d1", 5, 9, Tally({"bucket.delivered": 5}))

    assert store.values[STATE_KEY]["chunks"] > 1 and store.values[STATE_KEY]["messages"] == {"rejected.bad": 1}
    third = ResumeLog(store, "query-1")
    assert third.restore(0, "d0").complete
    assert third.restore(1, "d1").ranges == [(0, 4), (5, 9)]


def test_partial_progress_is_written_at_most_every_min_interval_but_a_completed_chunk_at_once():
    store = RecordingStore()
    log = ResumeLog(store, "query-1", min_interval=3_600)
    log.batch_acknowledged(0, "d0", 0, 9, Tally({"bucket.delivered": 10}))
    log.batch_acknowledged(0, "d0", 10, 19, Tally({"bucket.delivered": 10}))
    writes = len(store.writes)
    log.batch_acknowledged(0, "d0", 20, 29, Tally({"bucket.delivered": 10}))
    assert len(store.writes) == writes, "within min_interval"
    log.chunk_completed(0, "d0", Tally({"bucket.delivered": 30}))
    assert store.values[chunk_key(0)]["complete"]


def test_chunk_digest_is_the_one_earlier_tries_saved():
    # The digest an earlier release wrote to the state store for these keys (one SHA-256 update a row): a retry
    # after an upgrade resumes only if the digest of the same rows is still this one.
    names = ["Purchase", None, "Lead"]
    ids = ["order-1", "order-2", "caf\u00e9 \ud83d"]  # text beyond ASCII, and a lone surrogate from a hand-built frame

    assert chunk_digest(names, ids) == "0b8864dcd6995d1a5359f8684a785111"
    assert chunk_digest(names[:2], ids[:2]) != chunk_digest(names, ids)


def test_chunk_digest_digests_each_row_key_in_order():
    names = ["Purchase", None, "Lead", "", "\u6f22"] * 400
    ids = [f"id-{row}" if row % 7 else None for row in range(len(names))]
    per_row = hashlib.sha256()
    for name, event_id in zip(names, ids, strict=True):
        per_row.update(f"{name}\x1f{event_id}\x1e".encode("utf-8", "surrogatepass"))

    assert chunk_digest(names, ids) == per_row.hexdigest()[:32]
    assert chunk_digest(names, ids[::-1]) != chunk_digest(names, ids)


def test_without_a_store_the_progress_of_a_long_run_takes_no_memory():
    import tracemalloc

    resume = ResumeLog(None, "query-1")
    batch = Tally({"bucket.delivered": 1_000, "sent": 1_000})
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for chunk in range(1_000):  # 10,000,000 rows in chunks of 10,000 and batches of 1,000
            for first in range(0, 10_000, 1_000):
                resume.batch_acknowledged(chunk, "digest", first, first + 999, batch)
            resume.chunk_completed(chunk, "digest", batch)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 64 * 1024
