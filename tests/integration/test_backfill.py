"""
A real backfill of the nightly DAG: Airflow's api-server, scheduler and dag-processor run as processes on a
fresh ``AIRFLOW_HOME``; ``airflow backfill create`` sends five seeded days of a PostgreSQL warehouse to a
sandbox, each conversion exactly once; the same backfill reprocessed 49 hours later sends nothing, because
the delivery log remembers what Gravity holds after its own 48-hour dedup has forgotten it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from demo.sample_data import (
    CRM_COLUMNS,
    CRM_TABLE,
    STORE_COLUMNS,
    STORE_TABLE,
    SampleConfig,
    generate,
    postgres_schema_sql,
)
from tests.support.airflow_processes import AirflowProcesses
from tests.support.databases import POSTGRES_URL, airflow_uri, require_server
from tests.support.sandbox_server import SandboxServer

pytestmark = pytest.mark.slow

REPO_DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_ID = "gravity_offline_conversions"
TASKS = {"send_crm_conversions": CRM_TABLE, "send_store_purchases": STORE_TABLE}
# Seven days of data; the backfill covers the middle five, so the first and last day must not be sent.
# The seed keeps every day's broken rows under the tasks' max_error_rate (1%), yet leaves some to refuse.
SAMPLE = SampleConfig(days=7, crm_rows_per_day=150, store_rows_per_day=200, start=dt.date(2025, 6, 2), seed=17)
BACKFILL_DAYS = [SAMPLE.start + dt.timedelta(days=offset) for offset in range(1, 6)]
RUNS_TIMEOUT = 180.0
CRM_EVENT_NAMES = {"lead": "Lead", "sign_up": "CompleteRegistration", "phone_order": "Purchase"}
_CURRENCY = re.compile(r"[A-Za-z]{3}")
#: Each run reads exactly its day (the DAG's default lookback reads the two days before it too).
EXACT_WINDOW = json.dumps({"lookback_days": 0})


@pytest.fixture
def warehouse_uri() -> Iterator[str]:
    """A scratch PostgreSQL database seeded with the sample tables; yields its Airflow connection URI."""
    server = require_server(POSTGRES_URL)
    database = f"gravity_backfill_{uuid.uuid4().hex[:8]}"
    with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {database}")
    url = sa.make_url(POSTGRES_URL).set(database=database)
    warehouse = sa.create_engine(url)
    try:
        seed_warehouse(warehouse, generate(SAMPLE))
        yield airflow_uri(url.render_as_string(hide_password=False))
    finally:
        warehouse.dispose()
        with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # FORCE: a task killed mid-query may have left a connection behind.
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        server.dispose()


def seed_warehouse(engine: sa.Engine, tables: dict[str, list[tuple]]) -> None:
    connection = engine.raw_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(postgres_schema_sql())
            for table, columns in ((CRM_TABLE, CRM_COLUMNS), (STORE_TABLE, STORE_COLUMNS)):
                placeholders = ", ".join(["%s"] * len(columns))
                cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", tables[table])
        connection.commit()
    finally:
        connection.close()


def _sendable_crm_row(row: dict) -> bool:
    return row["currency"] is None or bool(_CURRENCY.fullmatch(row["currency"].strip()))


def _sendable_store_row(row: dict) -> bool:
    if row["total"] is not None and row["total"] < 0:
        return False
    if not _CURRENCY.fullmatch(row["currency"].strip()):
        return False
    try:
        return isinstance(json.loads(row["items"]), list)
    except ValueError:
        return False


def expected_deliveries(tables: dict[str, list[tuple]], days: list[dt.date]) -> dict[str, dict[str, Counter]]:
    """
    Per task, per day: the seeded rows the DAG's SQL selects (timestamp in the day) and, of those, the
    events that can be sent, as ``{"sendable": Counter(day: n), "read": Counter(day: n), "ids": {...}}``.
    Rows with a broken currency, total or line items are refused before sending.
    """
    wanted = {day.isoformat() for day in days}
    layouts = {
        "send_crm_conversions": (CRM_TABLE, list(CRM_COLUMNS), "created_at", "crm-{id}", _sendable_crm_row),
        "send_store_purchases": (
            STORE_TABLE,
            list(STORE_COLUMNS),
            "purchased_at",
            "pos-{transaction_id}",
            _sendable_store_row,
        ),
    }
    expected: dict[str, dict] = {}
    for task_id, (table, columns, time_column, id_format, sendable) in layouts.items():
        read, sent, ids = Counter(), Counter(), {}
        for values in tables[table]:
            row = dict(zip(columns, values, strict=True))
            day = (row[time_column] or "")[:10]
            if day not in wanted:
                continue
            read[day] += 1
            if sendable(row):
                sent[day] += 1
                name = CRM_EVENT_NAMES[row["kind"]] if table == CRM_TABLE else "Purchase"
                ids[id_format.format(**row)] = name
        expected[task_id] = {"read": read, "sendable": sent, "ids": ids}
    return expected


def airflow_env(sandbox: SandboxServer, warehouse_uri: str) -> dict[str, str]:
    gravity = {"conn_type": "gravity", "host": sandbox.url, "password": sandbox.api_key}
    return {
        "AIRFLOW_CONN_GRAVITY_DEFAULT": json.dumps(gravity),
        "AIRFLOW_CONN_GRAVITY_WAREHOUSE": warehouse_uri,
        "GRAVITY_DAG_SCHEDULE": "0 0 * * *",  # calendar-day intervals
        "GRAVITY_DAG_TIMEZONE": "UTC",
        "GRAVITY_DAG_START_DATE": SAMPLE.start.isoformat(),
    }


def summaries_by_day(airflow: AirflowProcesses, runs: list) -> dict[str, dict[str, dict]]:
    """``{task_id: {day: summary}}`` from the runs' XCom return values."""
    returned = airflow.return_values(DAG_ID, [run["run_id"] for run in runs])
    by_task: dict[str, dict[str, dict]] = {task_id: {} for task_id in TASKS}
    for run in runs:
        day = str(run["data_interval_start"])[:10]
        for task_id in TASKS:
            by_task[task_id][day] = returned.get((run["run_id"], task_id))
    return by_task


def assert_runs_cover_days(runs: list) -> None:
    intervals = [(str(run["data_interval_start"])[:19], str(run["data_interval_end"])[:19]) for run in runs]
    assert intervals == [(f"{day} 00:00:00", f"{day + dt.timedelta(days=1)} 00:00:00") for day in BACKFILL_DAYS], (
        "each backfill run must select one whole calendar day"
    )
    assert [run["state"] for run in runs] == ["success"] * len(BACKFILL_DAYS)


def test_backfill_sends_each_row_once_and_a_reprocessed_backfill_after_48_hours_sends_nothing(
    tmp_path: Path, warehouse_uri: str
) -> None:
    tables = generate(SAMPLE)
    expected = expected_deliveries(tables, BACKFILL_DAYS)
    expected_ids = {**expected["send_crm_conversions"]["ids"], **expected["send_store_purchases"]["ids"]}
    rows_read = sum(sum(task["read"].values()) for task in expected.values())
    # Not vacuous: the seed has rows on days outside the backfill, and broken rows inside it.
    assert rows_read < sum(len(rows) for rows in tables.values())
    assert len(expected_ids) < rows_read
    from_date, to_date = BACKFILL_DAYS[0].isoformat(), BACKFILL_DAYS[-1].isoformat()

    with SandboxServer() as sandbox:
        home = tmp_path / "airflow-home"
        home.mkdir()
        with AirflowProcesses(home, REPO_DAGS, airflow_env(sandbox, warehouse_uri)) as airflow:
            airflow.wait_for_dag(DAG_ID)
            airflow.cli("dags", "unpause", DAG_ID)

            first = airflow.create_backfill(DAG_ID, from_date, to_date, "--dag-run-conf", EXACT_WINDOW)
            runs = airflow.wait_for_backfill_runs(first, len(BACKFILL_DAYS), RUNS_TIMEOUT)
            assert_runs_cover_days(runs)

            received = Counter((event["event_name"], event["event_id"]) for event in sandbox.events())
            assert max(received.values()) == 1, "an event reached Gravity more than once"
            assert dict(received) == {(name, event_id): 1 for event_id, name in expected_ids.items()}
            stats = sandbox.stats()
            assert stats["redelivered"] == 0
            assert stats["by_status"] == {"ok": len(expected_ids), "duplicate": 0, "error": 0}

            first_summaries = summaries_by_day(airflow, runs)
            for task_id, days in first_summaries.items():
                for day, summary in days.items():
                    assert summary is not None, f"{task_id} of {day} returned no summary"
                    assert summary["rows_read"] == expected[task_id]["read"][day], (task_id, day)
                    assert summary["delivered"] == expected[task_id]["sendable"][day], (task_id, day)
                    assert summary["invalid"] == summary["rows_read"] - summary["delivered"], (task_id, day)

            # Past Gravity's 48-hour dedup window only the delivery log stands between a re-run and a double count.
            airflow.wait_for_backfill_completed(first)
            sandbox.advance_clock(hours=49)
            second = airflow.create_backfill(
                DAG_ID, from_date, to_date, "--reprocess-behavior", "completed", "--dag-run-conf", EXACT_WINDOW
            )
            rerun = airflow.wait_for_backfill_runs(second, len(BACKFILL_DAYS), RUNS_TIMEOUT)
            assert_runs_cover_days(rerun)

            after = sandbox.stats()
            assert after["by_status"] == stats["by_status"], "the reprocessed backfill delivered events again"
            assert after["events_received"] == stats["events_received"], "the reprocessed backfill sent events"
            assert after["redelivered"] == 0

            for task_id, days in summaries_by_day(airflow, rerun).items():
                for day, summary in days.items():
                    assert summary is not None, f"{task_id} of {day} returned no summary on the re-run"
                    assert summary["delivered"] == 0, (task_id, day)
                    assert summary["skipped_delivered"] == expected[task_id]["sendable"][day], (task_id, day)
