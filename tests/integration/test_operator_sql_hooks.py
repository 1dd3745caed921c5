"""
The operator's SQL side as common-sql's (issue 20): every SQL hook it makes gets ``hook_params``, and
``retry_on_failure`` means what it means for common-sql's check operators. Real Airflow, real PostgreSQL.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from airflow_provider_gravity.history.recording import _history_hook
from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator
from tests.support.airflow_fixtures import run_dag_test, single_task_dag, task_states
from tests.support.databases import POSTGRES_URL, airflow_uri
from tests.support.messy_rows import unique_orders
from tests.support.sandbox_server import gravity_connection_json
from tests.support.warehouse import SCALAR_SQL, load_orders_postgres


@pytest.fixture
def three_connections(postgres, monkeypatch):
    """The warehouse, and the same server as two more connections: one for the delivery log, one for the history."""
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_LOG", airflow_uri(POSTGRES_URL))
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_HISTORY", airflow_uri(POSTGRES_URL))
    return postgres


def test_hook_params_reach_the_warehouse_the_delivery_log_and_the_history_hooks(three_connections):
    _, schema = three_connections
    hook_params = {"log_sql": False, "options": f"-c search_path={schema}"}
    operator = SendConversionsOperator(
        task_id="send",
        sql="SELECT 1",
        conn_id="warehouse",
        hook_params=hook_params,
        delivery_log_table="delivery_log",
        delivery_log_conn_id="warehouse_log",
        run_history_table="run_history",
        run_history_conn_id="warehouse_history",
    )

    hooks = {
        "warehouse": operator.sql_hook,
        "delivery log": operator.sql_hook_of(operator.delivery_log_conn_id),
        "run history": _history_hook(operator),
    }

    assert operator.get_db_hook() is operator.sql_hook, "OpenLineage gets the hook the run reads with"
    for name, hook in hooks.items():
        assert hook.log_sql is False, name
        connection = hook.get_conn()  # the options reach the server: a session of the hook searches the schema
        try:
            cursor = connection.cursor()
            cursor.execute("SHOW search_path")
            assert cursor.fetchone()[0] == schema, name
        finally:
            connection.close()
    assert operator.hook_params == hook_params, "get_hook adds the connection's extras to a copy, not to these"


def test_a_run_with_hook_params_writes_its_log_and_history_on_their_own_connections(
    three_connections, sandbox, airflow_db, monkeypatch
):
    engine, schema = three_connections
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox))
    load_orders_postgres(engine, f"{schema}.orders", unique_orders(200, seed=31, first_id=800_000))
    dag = single_task_dag(
        "gravity_hook_params",
        SendConversionsOperator,
        sql=SCALAR_SQL.format(table=f"{schema}.orders"),
        conn_id="warehouse",
        hook_params={"log_sql": False, "options": f"-c search_path={schema}"},
        event_name="Purchase",
        max_error_rate=0.5,
        delivery_log_table=f"{schema}.delivery_log",
        delivery_log_conn_id="warehouse_log",
        run_history_table=f"{schema}.run_history",
        run_history_conn_id="warehouse_history",
    )

    dag_run, returned = run_dag_test(dag)

    assert task_states(dag_run)["send"] == ("success", 1)
    delivered = returned["send"]["delivered"]
    assert delivered > 0
    with engine.connect() as conn:
        logged = conn.execute(
            sa.text(f"SELECT count(*) FROM {schema}.delivery_log WHERE status = 'delivered'")
        ).scalar()
        history = conn.execute(sa.text(f"SELECT outcome, delivered FROM {schema}.run_history")).all()
    assert logged == delivered
    assert [tuple(row) for row in history] == [("success", delivered)]


@pytest.mark.parametrize(("retry_on_failure", "tries"), [(True, 3), (False, 1)])
def test_retry_on_failure_decides_whether_a_run_that_left_events_undelivered_is_retried(
    postgres, sandbox, airflow_db, monkeypatch, retry_on_failure, tries
):
    """As for common-sql's check operators: ``False`` fails the task at once, whatever its ``retries``."""
    engine, schema = postgres
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, max_retries=1, timeout=5))
    load_orders_postgres(engine, f"{schema}.orders", unique_orders(100, seed=32, first_id=800_000))
    sandbox.faults({"kind": "status", "status": 503, "count": 100_000})
    dag = single_task_dag(
        f"gravity_retry_on_failure_{str(retry_on_failure).lower()}",
        SendConversionsOperator,
        retries=2,
        retry_exponential_backoff=False,
        retry_on_failure=retry_on_failure,
        sql=SCALAR_SQL.format(table=f"{schema}.orders"),
        conn_id="warehouse",
        event_name="Purchase",
        max_error_rate=0.5,
    )

    dag_run, _ = run_dag_test(dag)

    assert task_states(dag_run)["send"] == ("failed", tries)
    assert sandbox.stats()["unique_events"] == 0, "Gravity was down throughout"
