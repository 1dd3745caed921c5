"""Every row in exactly one bucket, checked where the run writes it: the ledger, whatever the rows and answers."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_gravity.conversions.api.client import EventResult
from airflow_provider_gravity.conversions.errors import GravityUnavailableError
from airflow_provider_gravity.conversions.events.build import EventSettings
from airflow_provider_gravity.conversions.run.delivery_log import DeliveryLog
from airflow_provider_gravity.conversions.run.ledger import Ledger, Settlement
from airflow_provider_gravity.conversions.run.pipeline import ConversionPipeline
from airflow_provider_gravity.conversions.run.resume import ResumeLog
from airflow_provider_gravity.conversions.run.tally import Tally
from tests.support.examples import examples
from tests.support.state_store import DictStore

NOW = 1_767_230_000
BUCKETS = ("delivered", "duplicate", "rejected", "invalid", "skipped_delivered", "undelivered")
#: Gravity's answer to one event: a status, or no result for it at all.
ANSWERS = st.sampled_from(["ok", "ok", "ok", "duplicate", "error", "missing"])


class ScriptedGravity:
    """Answers each event by its id from a script; after ``fail_after`` requests it is unavailable."""

    def __init__(self, answers: dict[str, str], fail_after: int | None) -> None:
        self.answers = answers
        self.fail_after = fail_after
        self.requests_sent = 0
        self.retries = 0

    def send_events(self, events):
        if self.fail_after is not None and self.requests_sent >= self.fail_after:
            raise GravityUnavailableError(1, 503, "HTTP 503")
        self.requests_sent += 1
        results = []
        for event in events:
            event_id = json.loads(event.json)["event_id"]
            answer = self.answers.get(event_id, "ok")  # "missing": Gravity's answer left it out
            results.append(EventResult(event_id, answer, "bad value" if answer == "error" else None))
        return results


@st.composite
def nights(draw):
    """Chunks of rows with repeated ids and rows without a time, Gravity's answers, and where it goes down."""
    chunk_sizes = draw(st.lists(st.integers(1, 30), min_size=1, max_size=4))
    ids = st.integers(0, sum(chunk_sizes) + 5).map(lambda i: f"e{i}")
    frames = []
    for size in chunk_sizes:
        event_ids = draw(st.lists(ids, min_size=size, max_size=size))
        timed = draw(
            st.lists(st.booleans().map(lambda missing: None if missing else NOW - 60), min_size=size, max_size=size)
        )
        frames.append(pd.DataFrame({"event_id": event_ids, "event_time": timed}, dtype=object))
    answers = draw(st.dictionaries(ids, ANSWERS))
    fail_after = draw(st.none() | st.integers(0, 4))
    batch_size = draw(st.integers(1, 12))
    return frames, answers, fail_after, batch_size


def _one_try(frames, gravity, store, delivery_log, batch_size):
    pipeline = ConversionPipeline(
        settings=EventSettings(event_name="Purchase"),
        sender=gravity,
        batch_size=batch_size,
        max_concurrency=2,
        delivery_log=delivery_log,
        resume=ResumeLog(store, "query", min_interval=0),
        clock=lambda: NOW,
    )
    return pipeline, pipeline.run([frame.copy() for frame in frames])


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nights(), st.booleans())
def test_every_row_ends_in_one_bucket_on_each_try_and_a_retry_settles_the_rest(night, with_delivery_log):
    frames, answers, fail_after, batch_size = night
    rows = sum(len(frame) for frame in frames)
    with tempfile.TemporaryDirectory() as directory:
        delivery_log = None
        if with_delivery_log:
            engine = sa.create_engine(f"sqlite:///{Path(directory) / 'log.db'}")
            delivery_log = DeliveryLog(engine, "delivery_log")
            delivery_log.ensure_table()
        store = DictStore()
        first_pipeline, first = _one_try(frames, ScriptedGravity(answers, fail_after), store, delivery_log, batch_size)
        healthy = {event_id: answer for event_id, answer in answers.items() if answer != "missing"}
        second_pipeline, second = _one_try(frames, ScriptedGravity(healthy, None), store, delivery_log, batch_size)

    for pipeline, result in ((first_pipeline, first), (second_pipeline, second)):
        assert pipeline.ledger.mismatches == [], "a chunk closed with a row in no bucket, or in two"
        assert result.summary["rows_read"] == rows
        assert sum(result.summary[bucket] for bucket in BUCKETS) == rows
    assert second.summary["undelivered"] == 0, "the retry settles every row the first try left"
    assert second.failure is None


def test_the_ledger_names_a_chunk_that_closes_with_a_row_in_no_bucket(caplog):
    ledger = Ledger(delivery_log=None, resume=ResumeLog(None, ""), run_id="manual")
    ledger.open_chunk(0, "digest", rows=3)
    delivered = Tally()
    delivered.count_row("delivered", None, 2)
    ledger.settle(0, Settlement(delivered))
    ledger.chunk_submitted(0)

    assert ledger.mismatches == [(0, 3, 2)]
    assert "Chunk 0 closed with 2 of its 3 rows in a bucket" in caplog.text
