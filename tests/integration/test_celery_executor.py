"""
The sharded DAG on a real CeleryExecutor, with a worker SIGKILLed mid-send.

The test starts Airflow's api-server, scheduler and dag-processor and two ``airflow celery worker`` processes
(Redis broker, PostgreSQL metadata database and result backend), backfills several days of a generated
``store_transactions`` table through ``gravity_offline_conversions_sharded`` with its delivery log, and, while
shards are sending to a deliberately slow sandbox, kills one worker with its children. Airflow's own
mechanisms must recover: the scheduler fails the silent task after the heartbeat timeout, retries it on the
surviving worker, and the retry resumes after what Gravity acknowledged. At the end every row reached the
sandbox once, the delivery log holds every row, and the events sent twice are at most the batches that were
in flight when the worker died.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator
from benchmarks.celery_deployment import (
    STORE_TABLE,
    CeleryWorker,
    create_store_transactions,
    drop_database,
    scratch_database_url,
)
from tests.support.celery_deployment import CeleryDeployment
from tests.support.databases import POSTGRES_URL, airflow_uri, require_server
from tests.support.sandbox_server import SandboxServer

pytestmark = pytest.mark.slow

REPO_DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_ID = "gravity_offline_conversions_sharded"
STORE_TASK, CRM_TASK = "send_store_purchases", "send_crm_conversions"
DELIVERY_LOG = "gravity_delivery_log"
FIRST_DAY = dt.date(2025, 6, 2)
DAYS = 3
ROWS_PER_DAY = 70_000
TOTAL_ROWS = DAYS * ROWS_PER_DAY
SHARDS = 2
WORKERS = (CeleryWorker("worker-a", concurrency=2), CeleryWorker("worker-b", concurrency=2))
#: Every request to the sandbox takes this long, so that a shard sends for several seconds: long enough to be
#: killed mid-send, whatever the machine's load.
SLOW_RESPONSE_SECONDS = 2.0
#: What one try of a shard can have sent without recording it, with the operator's defaults (which the DAG
#: keeps): ``2 × max_concurrency`` batches handed to its sending threads, ``max_concurrency`` of them on the
#: wire and as many queued or answered, waiting for the task's main thread to record them in the delivery log.
_OPERATOR_DEFAULTS = inspect.signature(SendConversionsOperator.__init__).parameters
EVENTS_IN_FLIGHT_PER_TASK = 2 * _OPERATOR_DEFAULTS["max_concurrency"].default * _OPERATOR_DEFAULTS["batch_size"].default
BUCKETS = ("delivered", "duplicate", "rejected", "invalid", "skipped_delivered", "undelivered")
STARTUP_TIMEOUT = 240.0
KILL_TIMEOUT = 180.0
RUNS_TIMEOUT = 300.0


@pytest.fixture
def warehouse() -> Iterator[sa.Engine]:
    """A scratch PostgreSQL database holding the generated ``store_transactions`` (and an empty CRM table)."""
    require_server(POSTGRES_URL).dispose()
    url = scratch_database_url(POSTGRES_URL, "gravity_celery_warehouse")
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        create_store_transactions(engine, FIRST_DAY, DAYS, ROWS_PER_DAY)
        yield engine
    finally:
        engine.dispose()
        drop_database(url)


def deployment_env(sandbox: SandboxServer, warehouse: sa.Engine) -> dict[str, str]:
    gravity = {"conn_type": "gravity", "host": sandbox.url, "password": sandbox.api_key}
    return {
        "AIRFLOW_CONN_GRAVITY_DEFAULT": json.dumps(gravity),
        "AIRFLOW_CONN_GRAVITY_WAREHOUSE": airflow_uri(warehouse.url.render_as_string(hide_password=False)),
        "GRAVITY_DAG_SCHEDULE": "0 0 * * *",  # calendar-day intervals
        "GRAVITY_DAG_TIMEZONE": "UTC",
        "GRAVITY_DAG_START_DATE": FIRST_DAY.isoformat(),
        "GRAVITY_DAG_SHARDS": str(SHARDS),
    }


def shard_ids(day_index: int, shard: int) -> tuple[int, int, int]:
    """The generated rows of one day and shard: ids ``first..last`` whose remainder modulo SHARDS is ``shard``."""
    first, last = day_index * ROWS_PER_DAY + 1, (day_index + 1) * ROWS_PER_DAY
    return first, last, sum(1 for n in range(first, last + 1) if n % SHARDS == shard)


def day_index(run: RowMapping) -> int:
    return (run["data_interval_start"].date() - FIRST_DAY).days


def logged_rows_of_shard(warehouse: sa.Engine, day: int, shard: int) -> int:
    """How many rows of one day's shard the delivery log holds (0 before the log table exists)."""
    first, last, _ = shard_ids(day, shard)
    with warehouse.connect() as connection:
        if connection.exec_driver_sql(f"SELECT to_regclass('{DELIVERY_LOG}')").scalar() is None:
            return 0
        return connection.exec_driver_sql(
            f"SELECT count(*) FROM {DELIVERY_LOG} WHERE event_name = 'Purchase' AND event_id IN "
            f"(SELECT 'pos-' || transaction_id FROM {STORE_TABLE} WHERE transaction_id BETWEEN %s AND %s "
            f"AND transaction_id %% %s = %s)",
            (first, last, SHARDS, shard),
        ).scalar()


def store_shards(airflow: CeleryDeployment, backfill_id: int, state: str) -> list[RowMapping]:
    return airflow.query(
        "SELECT ti.run_id, ti.task_id, ti.map_index, ti.try_number, ti.hostname, dr.data_interval_start "
        "FROM task_instance ti JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id "
        "WHERE dr.backfill_id = %s AND ti.task_id = %s AND ti.state = %s",
        (backfill_id, STORE_TASK, state),
    )


def shard_mid_send(airflow: CeleryDeployment, warehouse: sa.Engine, backfill_id: int) -> RowMapping | None:
    """
    A store shard that is sending (some batches acknowledged, most still to send) on a worker that, like
    the other worker, already finished a task; None while there is none.
    """
    finished_on = {
        row["hostname"] for row in airflow.query("SELECT hostname FROM task_instance WHERE state = 'success'")
    }
    if not finished_on >= {worker.name for worker in WORKERS}:
        return None
    for shard in store_shards(airflow, backfill_id, "running"):
        _, _, rows = shard_ids(day_index(shard), shard["map_index"])
        logged = logged_rows_of_shard(warehouse, day_index(shard), shard["map_index"])
        # At most half sent: seconds of sending left, so the shard is still running when its worker dies (with
        # answers logged as they arrive, "all but the batches in flight" left too little, and a shard won the race).
        if 0 < logged <= min(rows // 2, rows - EVENTS_IN_FLIGHT_PER_TASK):
            return shard
    return None


def running_on(airflow: CeleryDeployment, hostname: str) -> list[RowMapping]:
    return airflow.query(
        "SELECT run_id, task_id, map_index, try_number FROM task_instance WHERE state = 'running' AND hostname = %s",
        (hostname,),
    )


def assert_sandbox_holds_every_row_once(sandbox: SandboxServer) -> int:
    """Every generated row was accepted exactly once; return how many events were sent again (``duplicate``)."""
    stats = sandbox.stats()
    assert stats["by_status"]["ok"] == TOTAL_ROWS, stats
    assert stats["unique_events"] == TOTAL_ROWS, stats
    assert stats["redelivered"] == 0, "an event was counted twice"
    assert stats["max_deliveries_of_one_event"] == 1, stats
    assert stats["by_status"]["error"] == 0, stats
    assert stats["plaintext_pii_seen"] == 0
    assert stats["events_received"] == TOTAL_ROWS + stats["by_status"]["duplicate"]
    return stats["by_status"]["duplicate"]


def assert_delivery_log_holds_every_row(warehouse: sa.Engine, resent: int) -> None:
    with warehouse.connect() as connection:
        missing = connection.exec_driver_sql(
            f"SELECT count(*) FROM {STORE_TABLE} t WHERE NOT EXISTS (SELECT 1 FROM {DELIVERY_LOG} l "
            "WHERE l.event_name = 'Purchase' AND l.event_id = 'pos-' || t.transaction_id)"
        ).scalar()
        statuses = dict(
            connection.exec_driver_sql(f"SELECT status, count(*) FROM {DELIVERY_LOG} GROUP BY status").all()
        )
    assert missing == 0, f"{missing} rows are not in the delivery log"
    # An event re-sent after the kill was answered `duplicate`: Gravity already had it from the killed try.
    assert statuses == {"delivered": TOTAL_ROWS - resent, **({"duplicate": resent} if resent else {})}


def assert_summaries_add_up(airflow: CeleryDeployment, runs: list[RowMapping], resent: int) -> None:
    """Each shard read its rows, each summary's buckets add up to them, and together they cover every row once."""
    summaries = airflow.mapped_return_values(DAG_ID, [run["run_id"] for run in runs])
    totals: Counter = Counter()
    for run in runs:
        for shard in range(SHARDS):
            store = summaries.get((run["run_id"], STORE_TASK, shard))
            crm = summaries.get((run["run_id"], CRM_TASK, shard))
            assert store is not None and crm is not None, f"shard {shard} of {run['run_id']} returned no summary"
            assert store["rows_read"] == shard_ids(day_index(run), shard)[2], (run["run_id"], shard)
            assert store["rows_read"] == sum(store[bucket] for bucket in BUCKETS), store
            assert crm["rows_read"] == 0, crm
            totals.update({bucket: store[bucket] for bucket in BUCKETS})
    assert totals["delivered"] + totals["skipped_delivered"] == TOTAL_ROWS - resent, totals
    assert totals["duplicate"] == resent, totals
    assert totals["rejected"] == totals["invalid"] == totals["undelivered"] == 0, totals


def test_sharded_backfill_on_celery_recovers_from_a_worker_killed_mid_send(
    tmp_path: Path, warehouse: sa.Engine
) -> None:
    started = time.monotonic()
    home = tmp_path / "airflow-home"
    home.mkdir()
    with SandboxServer(extra_args=["--no-store-events", "--log-level", "warning"]) as sandbox:
        sandbox.faults({"kind": "slow", "seconds": SLOW_RESPONSE_SECONDS, "count": 100_000})
        env = deployment_env(sandbox, warehouse)
        with CeleryDeployment(home, REPO_DAGS, WORKERS, env, startup_timeout=STARTUP_TIMEOUT) as airflow:
            airflow.wait_for_dag(DAG_ID)
            airflow.cli("dags", "unpause", DAG_ID)
            last_day = FIRST_DAY + dt.timedelta(days=DAYS - 1)
            backfill = airflow.create_backfill(
                DAG_ID,
                FIRST_DAY.isoformat(),
                last_day.isoformat(),
                "--max-active-runs",
                str(DAYS),
                "--dag-run-conf",
                json.dumps({"lookback_days": 0}),  # each shard reads exactly its day, as the assertions count
            )
            ready = time.monotonic()

            victim_shard = airflow.wait_until(
                lambda: shard_mid_send(airflow, warehouse, backfill), KILL_TIMEOUT, "a store shard mid-send"
            )
            victim = victim_shard["hostname"]
            survivor = next(worker.name for worker in WORKERS if worker.name != victim)
            killed_at = dt.datetime.now(dt.UTC)
            airflow.kill_worker(victim)
            killed = running_on(airflow, victim)  # still `running`: only the heartbeat timeout tells
            killed_store_tasks = sum(1 for ti in killed if ti["task_id"] == STORE_TASK)
            print(f"\nSIGKILLed {victim} {time.monotonic() - ready:.0f}s into the backfill; it was running:")
            for ti in killed:
                print(f"  {ti['run_id']} {ti['task_id']}[{ti['map_index']}] try {ti['try_number']}")

            runs = airflow.wait_for_backfill_runs(
                backfill, DAYS, RUNS_TIMEOUT, failed_states=frozenset({"failed", "upstream_failed"})
            )
            finished = time.monotonic()
            assert [run["state"] for run in runs] == ["success"] * DAYS
            assert [day_index(run) for run in runs] == list(range(DAYS))

            tries = airflow.task_tries(DAG_ID)
            assert {t["hostname"] for t in tries if t["state"] == "success"} == {w.name for w in WORKERS}, (
                "both workers must have run shards"
            )
            recoveries = []
            for ti in killed:
                key = (ti["run_id"], ti["task_id"], ti["map_index"])
                later = [t for t in tries if (t["run_id"], t["task_id"], t["map_index"]) == key]
                last = max(later, key=lambda t: t["try_number"])
                assert last["state"] == "success" and last["try_number"] > ti["try_number"], later
                assert last["hostname"] == survivor, f"{key} was retried on {last['hostname']}"
                recoveries.append(
                    ((last["start_date"] - killed_at).total_seconds(), (last["end_date"] - killed_at).total_seconds())
                )
            assert killed_store_tasks >= 1

            resent = assert_sandbox_holds_every_row_once(sandbox)
            bound = killed_store_tasks * EVENTS_IN_FLIGHT_PER_TASK
            restarted = max(start for start, _ in recoveries)
            done = max(end for _, end in recoveries)
            print(
                f"{TOTAL_ROWS:,} rows in {DAYS} days x {SHARDS} shards; {killed_store_tasks} store shard(s) killed "
                f"mid-send; events re-sent: {resent:,} (bound: {killed_store_tasks} x {EVENTS_IN_FLIGHT_PER_TASK:,} "
                f"events in flight = {bound:,}); retries started {restarted:.0f}s and finished {done:.0f}s after "
                f"the kill on {survivor}; backfill {finished - ready:.0f}s, test {time.monotonic() - started:.0f}s"
            )
            assert resent <= bound, f"{resent} events were sent twice, more than the {bound} in flight"
            assert_delivery_log_holds_every_row(warehouse, resent)
            assert_summaries_add_up(airflow, runs, resent)
