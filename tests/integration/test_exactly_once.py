"""Never double count: a retried task resumes, and the delivery log makes re-runs beyond 48 hours safe."""

from __future__ import annotations

import logging

import pytest
import requests
import sqlalchemy as sa

from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator
from tests.support.airflow_fixtures import run_dag_test, single_task_dag, task_states
from tests.support.databases import DELIVERY_LOG_COLUMNS
from tests.support.messy_rows import unique_orders
from tests.support.sandbox_server import gravity_connection_json
from tests.support.warehouse import SCALAR_SQL, load_orders_postgres


class ClearFaultsOnRetry(SendConversionsOperator):
    """The operator, with the sandbox healed before each retry: the outage ends while Airflow waits."""

    def __init__(self, *, sandbox_url: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sandbox_url = sandbox_url

    def execute(self, context):
        if context["ti"].try_number > 1:
            requests.post(f"{self.sandbox_url}/sandbox/faults", json={"faults": [], "replace": True}, timeout=5)
        return super().execute(context)


def make_dag(dag_id: str, operator_class=SendConversionsOperator, **operator_kwargs):
    return single_task_dag(dag_id, operator_class, retries=2, retry_exponential_backoff=False, **operator_kwargs)


@pytest.fixture
def impatient_gravity(sandbox, monkeypatch):
    """A Gravity connection that gives up after one quick retry, so an outage ends the try fast."""
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, max_retries=1, timeout=5))
    return sandbox


def test_a_retry_after_an_outage_resumes_and_resends_at_most_one_chunk(postgres, impatient_gravity, airflow_db):
    engine, schema = postgres
    sandbox = impatient_gravity
    load_orders_postgres(engine, f"{schema}.orders", unique_orders(12_000, seed=21, first_id=700_000))
    sandbox.faults({"kind": "status", "status": 503, "count": 100_000, "after": 9})
    dag = make_dag(
        "gravity_resume",
        ClearFaultsOnRetry,
        sandbox_url=sandbox.url,
        sql=SCALAR_SQL.format(table=f"{schema}.orders"),
        conn_id="warehouse",
        event_name="Purchase",
        chunk_size=2_000,
        batch_size=500,
        max_concurrency=2,
        max_error_rate=0.05,
    )

    dag_run, returned = run_dag_test(dag)

    assert task_states(dag_run)["send"] == ("success", 2), "the first try fails in the outage, the retry succeeds"
    summary = returned["send"]
    assert summary["rows_read"] == 12_000
    assert summary["delivered"] == 12_000
    assert summary["resumed_chunks"] >= 2, "chunks acknowledged before the outage are not sent again"
    stats = sandbox.stats()
    assert stats["unique_events"] == 12_000
    assert stats["redelivered"] == 0
    assert stats["by_status"]["duplicate"] <= 2_000, "at most one chunk is sent again"


def test_an_unstable_row_order_is_detected_and_everything_still_arrives_once(
    postgres, impatient_gravity, airflow_db, caplog
):
    engine, schema = postgres
    sandbox = impatient_gravity
    load_orders_postgres(engine, f"{schema}.orders", unique_orders(6_000, seed=22, first_id=700_000))
    sandbox.faults({"kind": "status", "status": 503, "count": 100_000, "after": 5})
    unordered_sql = SCALAR_SQL.format(table=f"{schema}.orders").replace("ORDER BY order_id", "ORDER BY random()")
    dag = make_dag(
        "gravity_unstable_order",
        ClearFaultsOnRetry,
        sandbox_url=sandbox.url,
        sql=unordered_sql,
        conn_id="warehouse",
        event_name="Purchase",
        chunk_size=1_000,
        batch_size=500,
        max_concurrency=2,
        max_error_rate=0.05,
    )
    caplog.set_level(logging.WARNING)

    dag_run, returned = run_dag_test(dag)

    assert task_states(dag_run)["send"] == ("success", 2)
    summary = returned["send"]
    assert summary["rows_read"] == 6_000
    assert summary["delivered"] + summary["duplicate"] == 6_000
    assert "row order is not stable" in caplog.text
    stats = sandbox.stats()
    assert stats["unique_events"] == 6_000
    assert stats["redelivered"] == 0


def test_delivery_log_skips_delivered_events_beyond_48_hours_and_never_resends_a_changed_one(
    postgres, sandbox, airflow_db, monkeypatch, caplog
):
    engine, schema = postgres
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox))
    orders = unique_orders(3_000, seed=23, first_id=700_000)
    orders[10]["currency"] = "dollars"  # a dead letter
    load_orders_postgres(engine, f"{schema}.orders", orders)
    log_table = f"{schema}.delivery_log"
    common = dict(
        sql=SCALAR_SQL.format(table=f"{schema}.orders"),
        conn_id="warehouse",
        event_name="Purchase",
        delivery_log_table=log_table,
    )

    _, first = run_dag_test(make_dag("gravity_log_day", **common))
    sandbox.advance_clock(hours=49)
    _, second = run_dag_test(make_dag("gravity_log_day", **common))
    after_second = sandbox.stats()
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {schema}.orders SET total = total + 1 WHERE order_id = 700042")
    caplog.set_level(logging.WARNING)
    _, third = run_dag_test(make_dag("gravity_log_day_changed", **common))
    after_third = sandbox.stats()

    assert first["send"]["delivered"] == 2_999
    assert first["send"]["invalid_reasons"] == {"bad_currency": 1}
    assert second["send"]["skipped_delivered"] == 2_999
    assert second["send"]["delivered"] == 0
    assert after_second["by_status"]["ok"] == 2_999, "nothing new reached Gravity after 49 hours"
    assert after_second["redelivered"] == 0
    # Gravity cannot update a conversion: after 48 h a re-send would be a second one. Counted, named, not sent.
    assert third["send"]["delivered"] == 0
    assert third["send"]["skipped_delivered"] == 2_999
    assert third["send"]["changed_since_delivery"] == 1
    assert "700042" in caplog.text and "were not sent again" in caplog.text
    assert after_third["events_received"] == after_second["events_received"]
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM {log_table} WHERE status = 'invalid'")).mappings().all()
        changed = conn.execute(sa.text(f"SELECT attempts, status FROM {log_table} WHERE event_id = '700042'")).one()
    assert [(r["event_id"], r["detail"]) for r in rows] == [("700010", "bad_currency")]
    assert set(rows[0]) == DELIVERY_LOG_COLUMNS
    assert tuple(changed) == (1, "delivered")
