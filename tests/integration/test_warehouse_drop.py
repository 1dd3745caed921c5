"""
The warehouse connection drops mid-read while Gravity is answering batches: every answer that arrives is in
the delivery log and the run history before the task fails, on both read paths, and the retry re-sends
nothing Gravity holds.
"""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator
from tests.support.airflow_fixtures import run_dag_test, single_task_dag, task_states
from tests.support.databases import POSTGRES_URL, airflow_uri
from tests.support.sandbox_server import gravity_connection_json
from tests.support.tcp_proxy import CuttableProxy

ROWS = 40_000
# ADBC reads ahead up to a 16 MB Arrow batch: the rows are wide enough that the result spans several batches.
NOTE_CHARACTERS = 500


def seed_orders(engine: sa.Engine, table: str) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"CREATE TABLE {table} AS SELECT g AS order_id, now() - interval '3 hours' + g * interval '1 ms' AS "
            f"created_at, 'buyer' || g || '@example.com' AS email, repeat('n', {NOTE_CHARACTERS}) AS note "
            f"FROM generate_series(1, {ROWS}) AS g"
        )


def cut_when_gravity_is_answering(proxy: CuttableProxy, sandbox, stop: threading.Event) -> None:
    """Cut the warehouse once the first batch has reached Gravity, while more are in flight and rows unread."""
    while not stop.is_set():
        if sandbox.stats()["requests"] >= 1:
            time.sleep(0.3)
            proxy.cut()
            return
        time.sleep(0.02)


def delivery_log_statuses(engine: sa.Engine, table: str) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(f"SELECT event_id, status FROM {table}").all()
    return {event_id: status for event_id, status in rows}


def history_rows(engine: sa.Engine, table: str) -> list[dict]:
    with engine.connect() as connection:
        return [dict(row) for row in connection.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id").mappings()]


@pytest.mark.parametrize("read_path", ["arrow", "cursor"])
def test_answers_in_flight_when_the_warehouse_drops_are_logged_and_never_resent(
    read_path, postgres, sandbox, airflow_db, monkeypatch
):
    engine, schema = postgres
    seed_orders(engine, f"{schema}.orders")
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, max_retries=2, timeout=10))
    # The delivery log and the run history stay on a direct connection: only the warehouse read drops.
    monkeypatch.setenv("AIRFLOW_CONN_LEDGER", airflow_uri(POSTGRES_URL))
    upstream = sa.make_url(POSTGRES_URL)
    proxy = CuttableProxy((upstream.host, upstream.port), bytes_per_second=3_000_000)
    proxied = upstream.set(port=proxy.port)
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", airflow_uri(proxied.render_as_string(hide_password=False)))
    sandbox.faults({"kind": "slow", "seconds": 1.5, "count": 12})
    # The cursor path serves every query with parameters; the Arrow path (ADBC) the others.
    where, parameters = ("WHERE order_id > %(after)s", {"after": 0}) if read_path == "cursor" else ("", None)
    arguments = {
        "sql": f"SELECT order_id AS event_id, created_at AS event_time, email AS em, note AS custom_note "
        f"FROM {schema}.orders {where} ORDER BY order_id",
        "parameters": parameters,
        "conn_id": "warehouse",
        "event_name": "Purchase",
        "chunk_size": 1_000,
        "batch_size": 250,
        "max_concurrency": 4,
        "delivery_log_table": f"{schema}.gravity_delivery_log",
        "delivery_log_conn_id": "ledger",
        "run_history_table": f"{schema}.gravity_run_history",
        "retries": 0,
    }
    dag_id = f"gravity_warehouse_drop_{read_path}"

    stop = threading.Event()
    cutter = threading.Thread(target=cut_when_gravity_is_answering, args=(proxy, sandbox, stop), daemon=True)
    cutter.start()
    try:
        dropped_run, _ = run_dag_test(single_task_dag(dag_id, SendConversionsOperator, **arguments))
    finally:
        stop.set()
        cutter.join()
        proxy.cut()

    assert task_states(dropped_run)["send"][0] == "failed"
    held_by_gravity = {event["event_id"] for event in sandbox.events()}
    assert 0 < len(held_by_gravity) < ROWS, "the cut must land while rows are unread and batches answered"
    logged = delivery_log_statuses(engine, f"{schema}.gravity_delivery_log")
    assert {event_id for event_id, status in logged.items() if status == "delivered"} == held_by_gravity
    (stopped,) = history_rows(engine, f"{schema}.gravity_run_history")
    assert stopped["outcome"] == "incomplete"
    assert stopped["delivered"] == len(held_by_gravity)
    assert "stopped" in stopped["failure"]
    assert stopped["rows_read"] == sum(
        stopped[bucket]
        for bucket in ("delivered", "duplicate", "rejected", "invalid", "skipped_delivered", "undelivered")
    )

    sandbox.faults()  # Gravity is quick again; the warehouse is back (direct)
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", airflow_uri(POSTGRES_URL))
    retry, returned = run_dag_test(single_task_dag(dag_id + "_retry", SendConversionsOperator, **arguments))

    assert task_states(retry)["send"][0] == "success"
    summary = returned["send"]
    assert summary["skipped_delivered"] == len(held_by_gravity)
    assert summary["delivered"] == ROWS - len(held_by_gravity)
    stats = sandbox.stats()
    assert stats["redelivered"] == 0 and stats["unique_events"] == ROWS
