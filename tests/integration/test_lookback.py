"""
The nightly DAG's ``lookback_days``: a row that lands in the warehouse after its night ran is sent by the next
night, once, and what earlier nights delivered is skipped; without a delivery log a lookback is refused before
anything is sent. The real ``gravity_offline_conversions`` DAG with ``dag.test()``, on PostgreSQL and on
MariaDB (with its SQL ported), sending to the sandbox.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

import pytest
import sqlalchemy as sa

from airflow_provider_gravity.history.queries import HistoryFilter, HistoryReader
from demo.sample_data import CRM_COLUMNS, CRM_TABLE, STORE_COLUMNS, STORE_TABLE, SampleConfig, generate
from tests.integration.test_dags import (
    NIGHTLY,
    first_scheduled_interval,
    load_dag_bag,
    port_sql_to_mariadb,
    render_task,
    run_context,
    sql_template,
)
from tests.support.sandbox_server import gravity_connection_json
from tests.support.warehouse import load_sample_mariadb

NIGHT_1_START = dt.datetime(2026, 11, 1, 3, tzinfo=dt.UTC)  # the cron's 03:00 UTC ticks
NIGHT_1_END = NIGHT_1_START + dt.timedelta(days=1)
NIGHT_2_END = NIGHT_1_END + dt.timedelta(days=1)
SAMPLE = SampleConfig(days=4, crm_rows_per_day=60, store_rows_per_day=60, start=dt.date(2026, 10, 30), seed=5)
LATE_ID = 999_001
TASKS = ("send_crm_conversions", "send_store_purchases")


def load_sample_postgres(engine: sa.Engine, schema: str, tables: dict[str, list[tuple]]) -> None:
    with engine.begin() as conn:
        for table, columns in ((CRM_TABLE, CRM_COLUMNS), (STORE_TABLE, STORE_COLUMNS)):
            conn.exec_driver_sql(f"CREATE TABLE {schema}.{table} ({', '.join(f'{n} {t}' for n, t in columns.items())})")
            placeholders = ", ".join(["%s"] * len(columns))
            conn.exec_driver_sql(f"INSERT INTO {schema}.{table} VALUES ({placeholders})", tables[table])


def late_crm_row() -> tuple:
    """A phone order of night 1 that the CRM synced after night 1 ran."""
    late = dict.fromkeys(CRM_COLUMNS)
    late.update(
        id=LATE_ID,
        kind="phone_order",
        created_at="2026-11-01 12:00:00",
        customer_id="late-customer",
        email="late.buyer@example.com",
        country="US",
        value=Decimal("42.00"),
        currency="USD",
    )
    return tuple(late.values())


def nightly_dag(monkeypatch, schema: str | None, history_table: str):
    monkeypatch.setenv("GRAVITY_DAG_RETRIES", "0")
    dag = load_dag_bag().dags[NIGHTLY]
    monkeypatch.delenv("GRAVITY_DAG_RETRIES")
    load_dag_bag()  # leave the default settings cached for the other tests
    for task_id in TASKS:
        dag.get_task(task_id).run_history_table = history_table  # as the README's cluster policy sets it
    return dag


def run_night(dag, logical_date: dt.datetime, conf: dict) -> tuple[dict, dict]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dag_run = dag.test(logical_date=logical_date, run_conf=conf)
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=NIGHTLY, run_id=dag_run.run_id, key="return_value")
        return states, {row.task_id: row.value for row in rows}


def assert_night_2_sends_the_late_row_once(
    dag, sandbox, conf: dict, history: tuple[sa.Engine, str], insert_late_row: Callable[[], None]
) -> None:
    states, _ = run_night(dag, NIGHT_1_END, conf)
    assert states == dict.fromkeys(TASKS, "success")
    night_1_times = {e["event_id"]: e["event_time"] for e in sandbox.events()}
    delivered_by_night_1 = set(night_1_times)
    assert f"crm-{LATE_ID}" not in delivered_by_night_1
    insert_late_row()

    states, night_2 = run_night(dag, NIGHT_2_END, conf)

    assert states == dict.fromkeys(TASKS, "success")
    received = [e["event_id"] for e in sandbox.events()]
    assert received.count(f"crm-{LATE_ID}") == 1
    assert len(received) == len(set(received)), "an event was sent twice"
    assert sandbox.stats()["redelivered"] == 0
    night_2_read_start = (NIGHT_1_END - dt.timedelta(days=conf["lookback_days"])).timestamp()
    for task_id, prefix in zip(TASKS, ("crm-", "pos-"), strict=True):
        reread = [i for i, t in night_1_times.items() if i.startswith(prefix) and t >= night_2_read_start]
        assert night_2[task_id]["skipped_delivered"] == len(reread) > 0, task_id
        assert night_2[task_id]["duplicate"] == 0, task_id
    assert night_2["send_crm_conversions"]["delivered"] == len(
        {i for i in received if i.startswith("crm-")} - delivered_by_night_1
    )
    engine, table = history
    days = {
        day["day"]: day
        for day in HistoryReader(engine, table).daily(
            HistoryFilter(NIGHT_1_START.date(), NIGHT_2_END.date(), dag_id=NIGHTLY)
        )
    }
    night_2_day = days[NIGHT_1_END.date().isoformat()]  # a day is its data interval's start
    assert night_2_day["delivered"] == sum(night_2[task_id]["delivered"] for task_id in TASKS)
    assert night_2_day["skipped_delivered"] == sum(night_2[task_id]["skipped_delivered"] for task_id in TASKS)


@pytest.fixture
def gravity_connection(sandbox, monkeypatch, airflow_db):
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, max_retries=8, timeout=5))
    return sandbox


def test_postgres_night_2_delivers_a_late_row_of_night_1_once_and_skips_night_1s_rows(
    postgres, gravity_connection, monkeypatch
):
    engine, schema = postgres
    load_sample_postgres(engine, schema, generate(SAMPLE))
    dag = nightly_dag(monkeypatch, schema, f"{schema}.gravity_run_history")
    conf = {
        "warehouse_conn_id": "warehouse",
        "crm_table": f"{schema}.{CRM_TABLE}",
        "store_table": f"{schema}.{STORE_TABLE}",
        "delivery_log_table": f"{schema}.gravity_delivery_log",
        "lookback_days": 2,
    }

    def insert_late_row() -> None:
        with engine.begin() as conn:
            placeholders = ", ".join(["%s"] * len(CRM_COLUMNS))
            conn.exec_driver_sql(f"INSERT INTO {schema}.{CRM_TABLE} VALUES ({placeholders})", late_crm_row())

    assert_night_2_sends_the_late_row_once(
        dag, gravity_connection, conf, (engine, f"{schema}.gravity_run_history"), insert_late_row
    )


def test_mariadb_night_2_delivers_a_late_row_of_night_1_once_and_skips_night_1s_rows(
    mariadb, gravity_connection, monkeypatch
):
    engine, _ = mariadb
    load_sample_mariadb(engine, generate(SAMPLE))
    dag = nightly_dag(monkeypatch, None, "gravity_run_history")
    for task_id in TASKS:
        dag.get_task(task_id).sql = port_sql_to_mariadb(sql_template(dag, task_id))
    conf = {"warehouse_conn_id": "warehouse_mariadb", "lookback_days": 2}

    def insert_late_row() -> None:
        with engine.begin() as conn:
            placeholders = ", ".join(["%s"] * len(CRM_COLUMNS))
            conn.exec_driver_sql(f"INSERT INTO {CRM_TABLE} VALUES ({placeholders})", late_crm_row())

    assert_night_2_sends_the_late_row_once(
        dag, gravity_connection, conf, (engine, "gravity_run_history"), insert_late_row
    )


@pytest.mark.parametrize("no_log", ["", None])
def test_a_lookback_without_a_delivery_log_is_refused_before_anything_is_sent(
    postgres, gravity_connection, monkeypatch, no_log
):
    engine, schema = postgres
    load_sample_postgres(engine, schema, generate(SAMPLE))
    dag = nightly_dag(monkeypatch, schema, f"{schema}.gravity_run_history")
    conf = {
        "warehouse_conn_id": "warehouse",
        "crm_table": f"{schema}.{CRM_TABLE}",
        "store_table": f"{schema}.{STORE_TABLE}",
        "delivery_log_table": no_log,
    }

    states, _ = run_night(dag, NIGHT_1_END, {**conf, "lookback_days": 2})

    assert states == dict.fromkeys(TASKS, "failed")
    assert gravity_connection.stats()["requests"] == 0

    states, summaries = run_night(dag, NIGHT_1_END, {**conf, "lookback_days": 0})

    assert states == dict.fromkeys(TASKS, "success"), "without a lookback no delivery log is needed"
    assert all(summaries[task_id]["delivered"] > 0 for task_id in TASKS)


def test_the_lookback_widens_the_data_interval_back_and_names_both_params_when_refused():
    from airflow.sdk.exceptions import AirflowFailException

    dag = load_dag_bag().dags[NIGHTLY]
    interval = first_scheduled_interval(dag, NIGHT_1_START)
    widened = render_task(dag, TASKS[0], run_context(dag, interval, lookback_days=2)).sql
    assert "created_at >= '2026-10-30 03:00:00'" in widened and "created_at < '2026-11-02 03:00:00'" in widened
    exact = render_task(dag, TASKS[0], run_context(dag, interval, lookback_days=0)).sql
    assert "created_at >= '2026-11-01 03:00:00'" in exact
    explicit = run_context(dag, None, window_start="2026-11-01", window_end="2026-11-02", lookback_days=2)
    assert "created_at >= '2026-11-01 00:00:00'" in render_task(dag, TASKS[0], explicit).sql, (
        "an explicit window is exact"
    )
    with pytest.raises(AirflowFailException, match="lookback_days=2 .* delivery_log_table is empty"):
        render_task(dag, TASKS[0], run_context(dag, interval, lookback_days=2, delivery_log_table=""))
