"""
The run summary's type, declared once: what :func:`~.tally.build_summary` returns, the operator returns as XCom,
the run history stores as JSON, and the guard, the metrics and the asset event read. Dependency-free, so that
the light modules (the operator, the metrics) can read a summary without loading the tally's numpy.

Its keys are the summary's JSON keys, unchanged: the TypedDict only lets the type checker catch a misspelt one.
"""

# No ``from __future__ import annotations``: TypedDict reads NotRequired from evaluated annotations only, and
# the runtime ``__required_keys__`` should say what the type checker says.
from collections.abc import Mapping
from typing import NotRequired, TypedDict

from airflow_provider_gravity.conversions.buckets import Bucket


class MatchKeyGuardEntry(TypedDict):
    """The summary's ``match_key_guard``: the match key that fell under its floor, and where it was seen."""

    key: str
    coverage: float
    floor: float
    rule: str
    events: int
    #: ``sample`` (before sending) or ``summary`` (after the run).
    stage: str


class RunSummary(TypedDict):
    """
    One run's summary: every source row in exactly one bucket (one key per :class:`Bucket`, at the top level),
    then the reasons, field drops, match-key coverage and speed. Counts, shares and names only: never PII.
    """

    rows_read: int
    delivered: int
    duplicate: int
    rejected: int
    invalid: int
    skipped_delivered: int
    undelivered: int
    #: ``invalid`` rows by reason (``missing_event_id``, ``duplicate_in_run``, ...).
    invalid_reasons: dict[str, int]
    #: ``rejected`` rows by Gravity's message, the most frequent first.
    rejected_errors: dict[str, int]
    #: Fields dropped from otherwise valid events, by reason (``invalid_email``, ...).
    field_drops: dict[str, int]
    changed_since_delivery: int
    events_sent: int
    attributed: int
    #: Each match key's share of the events sent (the keys of ``MATCH_KEYS``, in bit order).
    match_key_coverage: dict[str, float]
    error_rate: float
    requests: int
    retries: int
    seconds: float
    rows_per_second: float
    dry_run: bool
    #: Chunks a retried try skipped because an earlier try had them acknowledged; only when there were any.
    resumed_chunks: NotRequired[int]
    #: Only on a run the match-key guard refused.
    match_key_guard: NotRequired[MatchKeyGuardEntry]


def bucket_counts(summary: RunSummary) -> dict[Bucket, int]:
    """Return the rows of each bucket, in :class:`Bucket` order (the one place a bucket's key is not a literal)."""
    counts: Mapping[str, object] = summary
    return {bucket: _as_count(counts.get(bucket.value)) for bucket in Bucket}


def _as_count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
