"""A try that raises still leaves its row in the run history: the night is never blank in the Gravity view."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa

from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator
from tests.support.airflow_fixtures import run_dag_test, single_task_dag, task_states
from tests.support.messy_rows import messy_orders
from tests.support.sandbox_server import gravity_connection_json
from tests.support.warehouse import SCALAR_SQL, load_orders_sqlite


@pytest.fixture
def sqlite_warehouse(tmp_path, monkeypatch, sandbox):
    path = tmp_path / "warehouse.db"
    load_orders_sqlite(str(path), "orders", messy_orders(50, seed=3))
    monkeypatch.setenv("AIRFLOW_CONN_STOPPED_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox))
    engine = sa.create_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def only_history_row(engine: sa.Engine) -> dict:
    with engine.connect() as connection:
        (row,) = connection.exec_driver_sql("SELECT * FROM gravity_run_history").mappings().all()
    return dict(row)


@pytest.mark.parametrize(
    ("sql", "outcome", "failure"),
    [
        # The column contract refuses the query: not retried, and the reason is the contract's own message.
        (SCALAR_SQL.format(table="orders").replace("currency,", "currency AS shoe_size,"), "refused", "shoe_size"),
        # The warehouse fails the query: the history names the error's type, never its text (it may quote cells).
        ("SELECT * FROM no_such_orders", "incomplete", "the run stopped with "),
    ],
    ids=["column_contract", "warehouse_error"],
)
def test_a_try_that_raises_writes_its_run_history_row(sqlite_warehouse, airflow_db, sql, outcome, failure):
    dag_id = f"gravity_stopped_{uuid.uuid4().hex[:6]}"
    dag = single_task_dag(
        dag_id,
        SendConversionsOperator,
        sql=sql,
        conn_id="stopped_warehouse",
        event_name="Purchase",
        delivery_log_table="gravity_delivery_log",
        run_history_table="gravity_run_history",
        retries=0,
    )

    dag_run, _ = run_dag_test(dag)

    assert task_states(dag_run)["send"][0] == "failed"
    row = only_history_row(sqlite_warehouse)
    assert (row["dag_id"], row["run_id"], row["outcome"]) == (dag_id, dag_run.run_id, outcome)
    assert failure in row["failure"]
    assert "no_such_orders" not in row["failure"]  # the driver's text stays out of the view
    assert row["delivered"] == 0
