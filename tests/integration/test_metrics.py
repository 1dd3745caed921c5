"""
The run's metrics through Airflow's own ``[metrics]`` configuration: a real StatsD listener on loopback, the
operator run by ``airflow dags test`` in its own process (Airflow picks its metrics backend when a process
starts), reading the real PostgreSQL and sending to the sandbox.
"""

from __future__ import annotations

import importlib.util

import pytest

from airflow_provider_gravity.conversions.buckets import Bucket
from tests.support.dag_subprocess import run_dag_file, write_single_task_dag
from tests.support.messy_rows import messy_orders
from tests.support.sandbox_server import REPO_ROOT, gravity_connection_json
from tests.support.statsd_listener import StatsdListener
from tests.support.warehouse import SCALAR_SQL, load_orders_postgres

PREFIX = "airflow"
TAGS = {"dag_id": "gravity_metrics", "task_id": "send"}
MATCH_KEYS = ("em", "ph", "fn_ln", "external_id", "click_id")


def statsd_environment(port: int, **extra: str) -> dict[str, str]:
    # Without it Airflow's StatsD backend quietly falls back to sending nothing.
    assert importlib.util.find_spec("statsd"), "the statsd package (Airflow's StatsD client) is not installed"
    return {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(port),
        "AIRFLOW__METRICS__STATSD_PREFIX": PREFIX,
        "PYTHONPATH": str(REPO_ROOT),
        **extra,
    }


@pytest.fixture
def orders_dag(postgres, sandbox, monkeypatch):
    engine, schema = postgres
    load_orders_postgres(engine, f"{schema}.orders", messy_orders(3_000, seed=19))
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, max_retries=8, timeout=5))
    sandbox.faults({"kind": "status", "status": 503, "count": 2, "after": 1})  # so that retries is not 0
    return write_single_task_dag(
        TAGS["dag_id"],
        sql=SCALAR_SQL.format(table=f"{schema}.orders"),
        conn_id="warehouse",
        event_name="Purchase",
        chunk_size=1_000,
        max_error_rate=0.2,
    )


def test_statsd_receives_every_bucket_requests_retries_coverage_and_speed_equal_to_the_summary(orders_dag, airflow_db):
    with StatsdListener() as statsd:
        state, returned = run_dag_file(
            orders_dag,
            TAGS["dag_id"],
            statsd_environment(statsd.port, AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED="True"),
        )
        statsd.wait_for(f"{PREFIX}.gravity.rows_per_second")

    assert state == "success"
    summary = returned["send"]
    lines = {line.name: line for line in statsd.named(f"{PREFIX}.gravity.")}
    counters = {
        **{f"rows.{bucket}": summary[bucket] for bucket in Bucket},
        "requests": summary["requests"],
        "retries": summary["retries"],
    }
    gauges = {
        **{f"match_key_coverage.{key}": summary["match_key_coverage"][key] for key in MATCH_KEYS},
        "rows_per_second": summary["rows_per_second"],
    }
    assert set(lines) == {f"{PREFIX}.gravity.{name}" for name in (*counters, *gauges)}
    assert len(statsd.named(f"{PREFIX}.gravity.")) == len(lines)  # each once
    for name, count in counters.items():
        line = lines[f"{PREFIX}.gravity.{name}"]
        assert (line.kind, line.value) == ("c", count), name
    for name, value in gauges.items():
        line = lines[f"{PREFIX}.gravity.{name}"]
        assert line.kind == "g" and line.value == pytest.approx(value), name
    assert all(line.tags == TAGS for line in lines.values())
    assert summary["delivered"] > 2_000 and summary["invalid"] > 0 and summary["retries"] >= 2
    assert sum(summary[bucket] for bucket in Bucket) == summary["rows_read"] == 3_000


def test_a_metrics_backend_that_fails_on_the_providers_metrics_does_not_fail_the_delivery(
    orders_dag, sandbox, airflow_db
):
    with StatsdListener() as statsd:
        state, returned = run_dag_file(
            orders_dag,
            TAGS["dag_id"],
            statsd_environment(
                statsd.port,
                AIRFLOW__METRICS__STATSD_CUSTOM_CLIENT_PATH="tests.support.raising_statsd_client.RaisingStatsClient",
            ),
        )

    assert state == "success"
    assert returned["send"]["delivered"] == len(sandbox.events()) > 2_000
    assert statsd.named(f"{PREFIX}.gravity.") == []
    assert statsd.lines  # Airflow's own metrics got through the same client
