"""The run summary's one declaration (issue 20): ``RunSummary`` holds what ``build_summary`` writes, key for key."""

from __future__ import annotations

from airflow_provider_gravity.conversions.buckets import Bucket
from airflow_provider_gravity.conversions.match_keys import MATCH_KEYS
from airflow_provider_gravity.conversions.run.summary import RunSummary, bucket_counts
from airflow_provider_gravity.conversions.run.tally import Tally, build_summary

# The summary's JSON keys, in the order users and the view have always read them.
JSON_KEYS = [
    "rows_read",
    "delivered",
    "duplicate",
    "rejected",
    "invalid",
    "skipped_delivered",
    "undelivered",
    "invalid_reasons",
    "rejected_errors",
    "field_drops",
    "changed_since_delivery",
    "events_sent",
    "attributed",
    "match_key_coverage",
    "error_rate",
    "requests",
    "retries",
    "seconds",
    "rows_per_second",
    "dry_run",
]


def test_build_summary_writes_every_required_key_of_run_summary_and_no_other_in_the_json_order():
    tally = Tally({"bucket.delivered": 3, "bucket.invalid": 1, "invalid.bad_currency": 1, "sent": 3})

    summary = build_summary(tally, requests=1, retries=0, seconds=1.0, dry_run=False)

    assert list(summary) == JSON_KEYS
    assert set(JSON_KEYS) == RunSummary.__required_keys__
    assert RunSummary.__optional_keys__ == {"resumed_chunks", "match_key_guard"}
    assert list(summary["match_key_coverage"]) == list(MATCH_KEYS)


def test_every_bucket_is_a_key_of_the_summary_and_bucket_counts_reads_them_in_bucket_order():
    assert set(Bucket) <= RunSummary.__required_keys__, "a new Bucket needs its key in RunSummary and build_summary"
    tally = Tally({f"bucket.{bucket}": rows for rows, bucket in enumerate(Bucket, start=1)})

    counts = bucket_counts(build_summary(tally, requests=0, retries=0, seconds=0.0, dry_run=True))

    assert list(counts) == list(Bucket)
    assert list(counts.values()) == [1, 2, 3, 4, 5, 6]
