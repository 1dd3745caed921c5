"""The run history table: created once by concurrent writers on PostgreSQL, MariaDB and SQLite, one row per try,
written by SendConversionsOperator on success and on failure, never by a dry run, never failing a delivery."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid

import pytest
import sqlalchemy as sa

from airflow_provider_gravity.conversions.match_keys import MATCH_KEYS
from airflow_provider_gravity.history.queries import HistoryFilter, HistoryReader
from airflow_provider_gravity.history.writer import RunHistory, RunIdentity
from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator
from airflow_provider_gravity.storage.run_history_tables import COVERAGE_COLUMNS
from tests.support.airflow_fixtures import run_dag_test, single_task_dag, task_states
from tests.support.messy_rows import messy_orders
from tests.support.sandbox_server import gravity_connection_json
from tests.support.warehouse import SCALAR_SQL, load_orders_sqlite

SUMMARY = {
    "rows_read": 10,
    "delivered": 6,
    "duplicate": 1,
    "rejected": 1,
    "invalid": 2,
    "skipped_delivered": 0,
    "undelivered": 0,
    "invalid_reasons": {"bad_currency": 2},
    "rejected_errors": {"error: invalid event_time": 1},
    "field_drops": {"invalid_phone": 1},
    "changed_since_delivery": 0,
    "events_sent": 8,
    "attributed": 3,
    "match_key_coverage": {"em": 0.5, "ph": 0.25, "fn_ln": 0.0, "external_id": 1.0, "click_id": 0.125},
    "error_rate": 0.3,
    "requests": 2,
    "retries": 1,
    "seconds": 0.5,
    "rows_per_second": 20.0,
    "dry_run": False,
}
WRITERS = 6


@pytest.fixture(params=["postgres", "mariadb", "sqlite"])
def history_database(request, tmp_path):
    """``(engine, table name)`` of a fresh run history table on each database."""
    if request.param == "postgres":
        engine, schema = request.getfixturevalue("postgres")
        yield engine, f"{schema}.run_history"
    elif request.param == "mariadb":
        engine, _ = request.getfixturevalue("mariadb")
        yield engine, "run_history"
    else:
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'history.db'}", connect_args={"timeout": 30})
        yield engine, "run_history"
        engine.dispose()


def identity(run: int, try_number: int = 1, task_id: str = "send") -> RunIdentity:
    start = dt.datetime(2026, 3, 1, 3, tzinfo=dt.UTC) + dt.timedelta(days=run)
    return RunIdentity("gravity_dag", task_id, -1, f"scheduled__{start.isoformat()}", try_number, start, start)


def test_concurrent_writers_create_the_table_once_and_each_add_their_row(history_database):
    engine, table_name = history_database
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def write(number: int) -> None:
        options = {"connect_args": {"timeout": 30}} if engine.dialect.name == "sqlite" else {}
        history = RunHistory(sa.create_engine(engine.url, poolclass=sa.NullPool, **options), table_name)
        try:
            barrier.wait(timeout=30)
            history.ensure_table()
            history.record(identity(number % 3, try_number=number // 3 + 1), SUMMARY, "success", None)
        except BaseException as error:  # noqa: BLE001 - reported below with the thread's number
            errors.append(error)
        finally:
            history.engine.dispose()

    threads = [threading.Thread(target=write, args=(number,)) for number in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    RunHistory(engine, table_name).ensure_table()  # again, on an existing table: nothing happens
    schema, _, name = table_name.rpartition(".")
    inspector = sa.inspect(engine)
    assert {index["name"] for index in inspector.get_indexes(name, schema or None)} >= {
        f"ix_{name}_day",
        f"ix_{name}_dag_task_day",
        f"ix_{name}_run",
    }
    reader = HistoryReader(engine, table_name)
    everything = HistoryFilter(dt.date(2026, 1, 1), dt.date(2026, 12, 31))
    runs, total = reader.runs(everything, limit=100, offset=0)
    assert total == WRITERS
    first = runs[-1]
    assert first["day"] == "2026-03-01" and first["data_interval_start"] == "2026-03-01T03:00:00+00:00"
    for key in ("delivered", "invalid", "requests", "retries", "seconds", "rows_per_second", "error_rate"):
        assert first[key] == SUMMARY[key]
    assert first["match_key_coverage"] == SUMMARY["match_key_coverage"]
    assert first["invalid_reasons"] == {"bad_currency": 2}
    assert first["rejected_errors"] == {"error: invalid event_time": 1}
    # Per day, only the last try of each task instance counts: 3 days, one run each.
    days = reader.daily(everything)
    assert [day["runs"] for day in days] == [1, 1, 1]
    assert all(day["delivered"] == 6 and day["match_key_coverage"]["ph"] == 0.25 for day in days)
    assert reader.top_reasons(everything) == [
        {"kind": "invalid", "reason": "bad_currency", "rows": 6},
        {"kind": "rejected", "reason": "error: invalid event_time", "rows": 3},
    ]


def test_a_table_of_that_name_that_is_something_else_is_refused(history_database):
    engine, table_name = history_database
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE {table_name} (id INTEGER)")
    with pytest.raises(ValueError, match="not a run history table"):
        RunHistory(engine, table_name).ensure_table()


def test_the_row_holds_the_summary_and_no_pii():
    from airflow_provider_gravity.history.writer import history_row

    row = history_row(
        identity(0), SUMMARY, "refused", "Gravity refused the API key", recorded_at=dt.datetime.now(dt.UTC)
    )
    assert json.loads(row["summary"]) == SUMMARY
    assert row["outcome"] == "refused" and row["failure"] == "Gravity refused the API key"
    assert {row[column] for column in COVERAGE_COLUMNS.values()} == {
        SUMMARY["match_key_coverage"][k] for k in MATCH_KEYS
    }
    with pytest.raises(ValueError, match="outcome"):
        history_row(identity(0), SUMMARY, "fine", None, recorded_at=dt.datetime.now(dt.UTC))


# -- written by the operator ------------------------------------------------------------------------------


@pytest.fixture
def sqlite_warehouse(tmp_path, monkeypatch):
    """A SQLite warehouse of 300 messy orders, as connection ``history_warehouse``; yields its engine."""
    path = tmp_path / "warehouse.db"
    load_orders_sqlite(str(path), "orders", messy_orders(300, seed=5))
    monkeypatch.setenv("AIRFLOW_CONN_HISTORY_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    engine = sa.create_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def history_rows(engine: sa.Engine, table: str = "gravity_run_history") -> list[dict]:
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table(table):
            return []
        return [dict(row) for row in connection.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id").mappings()]


def send_dag(dag_id: str, **kwargs):
    arguments = {
        "sql": SCALAR_SQL.format(table="orders"),
        "conn_id": "history_warehouse",
        "event_name": "Purchase",
        "max_error_rate": 0.5,
        "delivery_log_table": "gravity_delivery_log",
        "run_history_table": "{{ 'gravity_run_history' }}",  # templated
        "retries": 0,
    }
    return single_task_dag(dag_id, SendConversionsOperator, **{**arguments, **kwargs})


def test_the_operator_writes_a_row_on_success_and_on_failure_and_none_on_a_dry_run(
    sandbox, airflow_db, sqlite_warehouse, monkeypatch
):
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox))
    dag_id = f"gravity_history_{uuid.uuid4().hex[:6]}"

    dry_run, _ = run_dag_test(send_dag(dag_id + "_dry", dry_run=True))
    assert task_states(dry_run)["send"][0] == "success"
    assert history_rows(sqlite_warehouse) == []

    dag_run, returned = run_dag_test(send_dag(dag_id))
    assert task_states(dag_run)["send"][0] == "success"
    (row,) = history_rows(sqlite_warehouse)
    summary = returned["send"]
    assert (row["dag_id"], row["task_id"], row["map_index"], row["run_id"]) == (dag_id, "send", -1, dag_run.run_id)
    assert row["outcome"] == "success" and row["failure"] is None and row["try_number"] == 1
    for key in ("rows_read", "delivered", "invalid", "rejected", "requests", "retries", "events_sent"):
        assert row[key] == summary[key], key
    assert row["coverage_em"] == summary["match_key_coverage"]["em"]
    assert json.loads(row["summary"]) == summary
    assert json.loads(row["invalid_reasons"]) == summary["invalid_reasons"]

    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, api_key="not-the-key"))
    failed_run, _ = run_dag_test(send_dag(dag_id + "_bad_key", delivery_log_table=None))
    assert task_states(failed_run)["send"][0] == "failed"
    failed = history_rows(sqlite_warehouse)[-1]
    assert failed["dag_id"] == dag_id + "_bad_key"
    assert failed["outcome"] == "refused" and failed["failure"]
    assert failed["undelivered"] > 0 and failed["delivered"] == 0
    assert "not-the-key" not in failed["failure"] + failed["summary"]


def test_a_history_that_cannot_be_written_never_fails_the_delivery(sandbox, airflow_db, sqlite_warehouse, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox))
    with sqlite_warehouse.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE not_a_history (id INTEGER)")

    dag_run, returned = run_dag_test(send_dag("gravity_history_unwritable", run_history_table="not_a_history"))

    assert task_states(dag_run)["send"][0] == "success"
    assert returned["send"]["delivered"] > 0
    assert history_rows(sqlite_warehouse, "not_a_history") == []
