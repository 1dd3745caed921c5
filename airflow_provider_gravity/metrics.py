"""
A run summary sent as metrics through Airflow's own metrics configuration (StatsD, Datadog, OpenTelemetry).

Airflow picks the backend from ``[metrics]`` (``statsd_on``, ``statsd_datadog_enabled``, ``otel_on``); when
metrics are off its stats object drops everything, so this module never needs to know which backend runs.

::

    gravity.rows.<bucket>                counter, one for each of the six buckets (zeros included)
    gravity.requests, gravity.retries    counters
    gravity.match_key_coverage.<key>     gauge, share of sent events (0 to 1): em, ph, fn_ln, external_id, click_id
    gravity.rows_per_second              gauge

Every metric is tagged ``dag_id`` and ``task_id``; a backend that takes no tags (plain StatsD without
``statsd_influxdb_enabled``) sends the names alone. The summary holds counts, shares and identifiers of the
task only, never PII.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_provider_gravity.conversions.run.summary import bucket_counts

if TYPE_CHECKING:
    from airflow_provider_gravity.conversions.run.summary import RunSummary

log = logging.getLogger(__name__)

METRIC_PREFIX = "gravity"


def _airflow_stats() -> Any:
    """Airflow's stats object: ``airflow.sdk.observability.stats`` on 3.3+, ``airflow.stats`` before."""
    try:
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # Airflow 3.1 and 3.2, where airflow.stats is not yet deprecated
        from airflow.stats import Stats  # type: ignore[attr-defined, no-redef]
    return Stats


def run_metrics(summary: RunSummary) -> tuple[dict[str, int], dict[str, float]]:
    """
    Return the counters and gauges of one run summary, by metric name.

    :param summary: the run summary the operator returns.
    :return: ``(counters, gauges)``.
    """
    counters = {f"{METRIC_PREFIX}.rows.{bucket}": rows for bucket, rows in bucket_counts(summary).items()}
    counters[f"{METRIC_PREFIX}.requests"] = int(summary["requests"])
    counters[f"{METRIC_PREFIX}.retries"] = int(summary["retries"])
    coverage = summary["match_key_coverage"]
    gauges = {f"{METRIC_PREFIX}.match_key_coverage.{key}": float(share) for key, share in coverage.items()}
    gauges[f"{METRIC_PREFIX}.rows_per_second"] = float(summary["rows_per_second"])
    return counters, gauges


def emit_run_metrics(summary: RunSummary, *, dag_id: str, task_id: str) -> None:
    """
    Send one run's metrics through Airflow's configured backend. Never raises: a metrics backend that is
    down or misconfigured is logged, and the delivery it describes stands.

    :param summary: the run summary the operator returns.
    :param dag_id: the task's DAG, sent as a tag.
    :param task_id: the task, sent as a tag.
    """
    tags = {"dag_id": dag_id, "task_id": task_id}
    try:
        stats = _airflow_stats()
        counters, gauges = run_metrics(summary)
        for name, count in counters.items():
            stats.incr(name, count, tags=tags)
        for name, value in gauges.items():
            stats.gauge(name, value, tags=tags)
    except Exception as error:  # noqa: BLE001 - metrics only observe; they never fail a delivery
        log.warning("Could not emit the run's metrics (%s); the run itself is not affected.", type(error).__name__)
