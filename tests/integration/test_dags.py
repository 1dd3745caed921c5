"""The DAGs in ``dags/``: they import, their schedule has real whole-day windows, their SQL selects
exactly that window (run on a real SQLite warehouse), and a run without a window fails loudly."""

from __future__ import annotations

import copy
import datetime as dt
import sqlite3
import sys
from pathlib import Path

import pendulum
import pytest
from airflow.timetables.base import DataInterval, TimeRestriction

try:  # Airflow 3.2+
    from airflow.dag_processing.dagbag import BundleDagBag
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import BundleDagBag
try:  # Airflow 3.2+: a DAG holds the task SDK's timetable, the scheduler's is built from it
    from airflow.serialization.encoders import coerce_to_core_timetable
except ImportError:  # Airflow 3.1: a DAG holds the scheduler's timetable itself

    def coerce_to_core_timetable(timetable):
        return timetable


try:  # Airflow 3.2+
    from airflow.sdk.exceptions import AirflowFailException, ParamValidationError
except ImportError:  # Airflow 3.1, whose task SDK does not have them yet
    from airflow.exceptions import AirflowFailException, ParamValidationError

from demo.sample_data import CRM_TABLE, STORE_TABLE, TIME_COLUMNS, SampleConfig, generate, write_sqlite
from tests.support.airflow_fixtures import REPO_ROOT

DAGS_FOLDER = REPO_ROOT / "dags"
NIGHTLY = "gravity_offline_conversions"
SHARDED = "gravity_offline_conversions_sharded"
SAMPLE = SampleConfig(days=3, crm_rows_per_day=300, store_rows_per_day=400, start=dt.date(2025, 6, 2), seed=7)
#: The params of a test that reads exactly the data interval: the DAGs' default lookback (2 days) widens it.
EXACT_WINDOW = {"lookback_days": 0}


def load_dag_bag() -> BundleDagBag:
    # The DAG files import their sibling helper modules; drop cached copies so env changes apply.
    for module in ("gravity_dag_defaults", "gravity_window"):
        sys.modules.pop(module, None)
    return BundleDagBag(dag_folder=DAGS_FOLDER, bundle_path=DAGS_FOLDER)


@pytest.fixture(scope="module")
def dag_bag() -> BundleDagBag:
    return load_dag_bag()


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("warehouse") / "warehouse.db"
    write_sqlite(path, SAMPLE)
    return path


def first_scheduled_interval(dag, earliest: dt.datetime) -> DataInterval:
    timetable = coerce_to_core_timetable(dag.timetable)
    restriction = TimeRestriction(earliest=pendulum.instance(earliest), latest=None, catchup=True)
    info = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    return info.data_interval


def run_context(dag, interval: DataInterval | None, **param_overrides) -> dict:
    params = {**dag.params.dump(), **param_overrides}
    return {
        "params": params,
        "data_interval_start": interval.start if interval else None,
        "data_interval_end": interval.end if interval else None,
        "logical_date": interval.start if interval else None,
    }


def render_task(dag, task_id: str, context: dict):
    """Render a task's templated fields the way its task instance would, on a copy of the task."""
    task = copy.copy(dag.get_task(task_id))
    task.render_template_fields(context, jinja_env=dag.get_template_env())
    return task


def render_sql_file(dag, sql_path: str, context: dict) -> str:
    return dag.get_template_env().get_template(sql_path).render(**context)


def query_event_ids(warehouse: Path, sql: str) -> list[str]:
    with sqlite3.connect(warehouse) as connection:
        cursor = connection.execute(sql)
        columns = [description[0] for description in cursor.description]
        return [row[columns.index("event_id")] for row in cursor.fetchall()]


def expected_event_ids(table: str, start: dt.datetime, end: dt.datetime) -> set[str]:
    """The ids a window must select, computed from the generated rows rather than with SQL."""
    prefix = "crm-" if table == CRM_TABLE else "pos-"
    time_index = 2  # created_at / purchased_at are the third column of both tables
    low, high = start.strftime("%Y-%m-%d %H:%M:%S"), end.strftime("%Y-%m-%d %H:%M:%S")
    rows = generate(SAMPLE)[table]
    return {f"{prefix}{row[0]}" for row in rows if row[time_index] is not None and low <= row[time_index] < high}


def test_both_dags_import_without_errors(dag_bag):
    assert dag_bag.import_errors == {}
    assert {NIGHTLY, SHARDED} <= set(dag_bag.dag_ids)
    for dag_id in (NIGHTLY, SHARDED):
        assert set(dag_bag.dags[dag_id].task_ids) == {"send_crm_conversions", "send_store_purchases"}


def test_nightly_dag_is_bounded_for_backfills_and_documented(dag_bag):
    dag = dag_bag.dags[NIGHTLY]
    assert dag.catchup is False
    assert dag.max_active_runs == 3
    assert "airflow backfill create" in dag.doc_md
    for task in dag.tasks:
        assert task.retries == 3


def test_scheduled_runs_send_whole_contiguous_days(dag_bag):
    dag = dag_bag.dags[NIGHTLY]
    timetable = coerce_to_core_timetable(dag.timetable)
    first = first_scheduled_interval(dag, dt.datetime(2025, 6, 2, tzinfo=dt.UTC))
    restriction = TimeRestriction(earliest=None, latest=None, catchup=True)
    second = timetable.next_dagrun_info(last_automated_data_interval=first, restriction=restriction).data_interval

    assert first.end - first.start == dt.timedelta(days=1)
    assert second.start == first.end, "consecutive runs must neither overlap nor leave a gap"
    assert (first.start.hour, first.start.minute) == (3, 0)  # the default cron, 0 3 * * *


def test_schedule_and_timezone_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("GRAVITY_DAG_SCHEDULE", "30 1 * * *")
    monkeypatch.setenv("GRAVITY_DAG_TIMEZONE", "Europe/Paris")
    dag = load_dag_bag().dags[NIGHTLY]
    monkeypatch.undo()
    load_dag_bag()  # leave the default settings cached for the other tests

    interval = first_scheduled_interval(dag, dt.datetime(2025, 6, 2, tzinfo=dt.UTC))
    local_start = interval.start.in_timezone("Europe/Paris")
    assert (local_start.hour, local_start.minute) == (1, 30)
    assert interval.end - interval.start == dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("task_id", "table"), [("send_crm_conversions", CRM_TABLE), ("send_store_purchases", STORE_TABLE)]
)
def test_sql_selects_exactly_the_scheduled_window(dag_bag, warehouse, task_id, table):
    dag = dag_bag.dags[NIGHTLY]
    interval = first_scheduled_interval(dag, dt.datetime(2025, 6, 2, tzinfo=dt.UTC))
    task = render_task(dag, task_id, run_context(dag, interval, **EXACT_WINDOW))

    time_column = TIME_COLUMNS[table]
    assert f"{time_column} >= '2025-06-02 03:00:00'" in task.sql
    assert f"{time_column} < '2025-06-03 03:00:00'" in task.sql
    assert task.sql.rstrip().endswith("ORDER BY event_id")
    event_ids = query_event_ids(warehouse, task.sql)
    assert event_ids == sorted(event_ids)
    assert set(event_ids) == expected_event_ids(table, interval.start, interval.end)
    assert len(event_ids) > 100


def test_explicit_window_params_override_the_data_interval(dag_bag, warehouse):
    dag = dag_bag.dags[NIGHTLY]
    context = run_context(dag, None, window_start="2025-06-03", window_end="2025-06-04T12:00:00+02:00")
    task = render_task(dag, "send_store_purchases", context)

    assert "purchased_at >= '2025-06-03 00:00:00'" in task.sql
    assert "purchased_at < '2025-06-04 10:00:00'" in task.sql  # rendered in UTC
    start, end = dt.datetime(2025, 6, 3), dt.datetime(2025, 6, 4, 10)
    assert set(query_event_ids(warehouse, task.sql)) == expected_event_ids(STORE_TABLE, start, end)


@pytest.mark.parametrize("dag_id", [NIGHTLY, SHARDED])
def test_manual_run_without_logical_date_fails_at_once_with_instructions(dag_bag, dag_id):
    dag = dag_bag.dags[dag_id]
    context = run_context(dag, None, shard=0, shard_count=4)
    with pytest.raises(AirflowFailException, match="no logical date.*window_start and\\s+window_end"):
        render_sql_file(dag, "sql/crm_conversions.sql", context)  # a failure, not retried


def test_empty_data_interval_is_refused_not_silently_sent(dag_bag):
    dag = dag_bag.dags[NIGHTLY]
    instant = pendulum.datetime(2025, 6, 2, 3, tz="UTC")
    with pytest.raises(ValueError, match="empty or reversed"):
        render_task(dag, "send_crm_conversions", run_context(dag, DataInterval(instant, instant)))


def test_half_an_explicit_window_is_refused(dag_bag):
    dag = dag_bag.dags[NIGHTLY]
    with pytest.raises(ValueError, match="both window_start and window_end"):
        render_task(dag, "send_crm_conversions", run_context(dag, None, window_start="2025-06-03"))


def test_operator_arguments_come_from_params_with_defaults(dag_bag):
    dag = dag_bag.dags[NIGHTLY]
    interval = first_scheduled_interval(dag, dt.datetime(2025, 6, 2, tzinfo=dt.UTC))

    crm = render_task(dag, "send_crm_conversions", run_context(dag, interval))
    store = render_task(dag, "send_store_purchases", run_context(dag, interval))
    assert (crm.conn_id, crm.gravity_conn_id) == ("gravity_warehouse", "gravity_default")
    assert (crm.delivery_log_conn_id, crm.delivery_log_table) == ("gravity_warehouse", "gravity_delivery_log")
    assert (crm.event_name, crm.action_source) == ("Lead", "system_generated")
    assert (store.event_name, store.action_source) == ("Purchase", "physical_store")
    assert "FROM crm_conversions AS c" in crm.sql
    # The defaults read the two days before the interval again (the delivery log is on) and guard e-mails.
    assert "created_at >= '2025-05-31 03:00:00'" in crm.sql and "created_at < '2025-06-03 03:00:00'" in crm.sql
    assert crm._min_match_coverage() == store._min_match_coverage() == {"em": 0.2}

    overrides = {
        "warehouse_conn_id": "dwh",
        "gravity_conn_id": "gravity_prod",
        "crm_table": "crm.conversions",
        "delivery_log_conn_id": "ledger",
        "delivery_log_table": "ledger_table",
    }
    custom = render_task(dag, "send_crm_conversions", run_context(dag, interval, **overrides))
    assert (custom.conn_id, custom.gravity_conn_id) == ("dwh", "gravity_prod")
    assert (custom.delivery_log_conn_id, custom.delivery_log_table) == ("ledger", "ledger_table")
    assert "FROM crm.conversions AS c" in custom.sql
    for floors, expected in (({"em": 0.5, "ph": 0.1}, {"em": 0.5, "ph": 0.1}), ({}, {}), (None, {})):
        custom = render_task(dag, "send_crm_conversions", run_context(dag, interval, min_match_coverage=floors))
        assert custom._min_match_coverage() == expected, floors


def test_table_params_reject_sql_injection(dag_bag):
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict(dag_bag.dags[NIGHTLY].params)
    with pytest.raises(ParamValidationError, match="crm_table"):
        params["crm_table"] = "crm; DROP TABLE crm"


@pytest.mark.parametrize("floors", [{"email": 0.5}, {"em": 1.5}, {"em": "half"}, [0.5]])
def test_the_coverage_floor_param_refuses_unknown_keys_and_shares_outside_0_to_1(dag_bag, floors):
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict(dag_bag.dags[NIGHTLY].params)
    with pytest.raises(ParamValidationError, match="min_match_coverage"):
        params["min_match_coverage"] = floors


def test_sharded_dag_maps_one_task_per_shard(dag_bag):
    dag = dag_bag.dags[SHARDED]
    for task in dag.tasks:
        shards = task.expand_input.value["params"]
        assert shards == [{"shard": n, "shard_count": 4} for n in range(4)]
        same_sql_as_nightly = {
            "send_crm_conversions": "sql/crm_conversions.sql",
            "send_store_purchases": "sql/store_purchases.sql",
        }[task.task_id]
        assert task.partial_kwargs["sql"] == same_sql_as_nightly


@pytest.mark.parametrize("table", [CRM_TABLE, STORE_TABLE])
def test_shards_partition_the_window(dag_bag, warehouse, table):
    dag = dag_bag.dags[SHARDED]
    task = dag.get_task("send_crm_conversions" if table == CRM_TABLE else "send_store_purchases")
    interval = first_scheduled_interval(dag_bag.dags[NIGHTLY], dt.datetime(2025, 6, 2, tzinfo=dt.UTC))

    per_shard = []
    for shard_params in task.expand_input.value["params"]:
        context = run_context(dag, interval, **shard_params, **EXACT_WINDOW)
        sql = render_sql_file(dag, task.partial_kwargs["sql"], context)
        per_shard.append(set(query_event_ids(warehouse, sql)))

    union = set().union(*per_shard)
    assert sum(len(shard) for shard in per_shard) == len(union), "shards overlap"
    assert union == expected_event_ids(table, interval.start, interval.end)
    assert all(len(shard) > 0.15 * len(union) for shard in per_shard), "shards are badly unbalanced"


# -- MariaDB / MySQL warehouses ---------------------------------------------------------------------------------
# The shipped SQL files are PostgreSQL and SQLite SQL: MariaDB has no CAST(... AS TEXT), reads `||` as OR, and
# its `/` is decimal division (the sharded modulo). What else the DAG does is dialect-free, so it is run here on
# MariaDB with the two spellings ported, to prove the window, the aliases, the ordering and the delivery log.

MARIADB_WINDOW_START = dt.datetime(2025, 6, 2, 3, tzinfo=dt.UTC)  # the first scheduled interval of SAMPLE


def port_sql_to_mariadb(sql_template: str) -> str:
    """A ``dags/sql`` template in MariaDB's spelling: ``CAST(x AS CHAR)``, ``CONCAT('crm-', ...)``."""
    import re

    ported, casts = re.subn(r"CAST\(([\w.]+) AS TEXT\)", r"CAST(\1 AS CHAR)", sql_template)
    ported, concats = re.subn(r"('[\w-]+') \|\| (CAST\([\w.]+ AS CHAR\))", r"CONCAT(\1, \2)", ported)
    assert (casts, concats) == (2, 1), "the DAG's SQL changed: update this port"
    return ported


def sql_template(dag, task_id: str) -> str:
    """The task's SQL template text (the DAG bag has already read ``sql/*.sql`` into the task)."""
    sql = dag.get_task(task_id).sql
    return (DAGS_FOLDER / sql).read_text() if sql.endswith(".sql") else sql


@pytest.fixture
def mariadb_sample(mariadb):
    from tests.support.warehouse import load_sample_mariadb

    engine, database = mariadb
    load_sample_mariadb(engine, generate(SAMPLE))
    return engine, database


def test_the_nightly_sql_is_not_mariadb_sql_but_its_port_selects_exactly_the_window(dag_bag, mariadb_sample):
    import sqlalchemy as sa

    engine, _ = mariadb_sample
    dag = dag_bag.dags[NIGHTLY]
    interval = first_scheduled_interval(dag, dt.datetime(2025, 6, 2, tzinfo=dt.UTC))
    assert interval.start == MARIADB_WINDOW_START
    context = run_context(dag, interval, **EXACT_WINDOW)
    for task_id, table in (("send_crm_conversions", CRM_TABLE), ("send_store_purchases", STORE_TABLE)):
        shipped = render_task(dag, task_id, context).sql
        with engine.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match=r"1064.*TEXT\)"):
            conn.exec_driver_sql(shipped)

        source = sql_template(dag, task_id)
        ported = dag.get_template_env().from_string(port_sql_to_mariadb(source)).render(**context)
        with engine.connect() as conn:
            event_ids = [row.event_id for row in conn.exec_driver_sql(ported)]
        assert event_ids == sorted(event_ids)
        assert set(event_ids) == expected_event_ids(table, interval.start, interval.end)
        assert len(event_ids) > 100


def test_nightly_dag_with_its_sql_ported_sends_a_mariadb_window_once_and_logs_deliveries_there(
    mariadb_sample, sandbox, airflow_db, monkeypatch
):
    """The real nightly DAG (params, window, delivery log) with dag.test() on a MariaDB warehouse: the window's
    sendable rows arrive; the delivery log, in MariaDB, makes a second run of the same night send nothing."""
    import sqlalchemy as sa
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from tests.support.sandbox_server import gravity_connection_json

    engine, _ = mariadb_sample
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, max_retries=8, timeout=5))
    monkeypatch.setenv("GRAVITY_DAG_RETRIES", "0")
    dag = load_dag_bag().dags[NIGHTLY]
    monkeypatch.delenv("GRAVITY_DAG_RETRIES")
    load_dag_bag()  # leave the default settings cached for the other tests
    tables = {"send_crm_conversions": CRM_TABLE, "send_store_purchases": STORE_TABLE}
    for task_id in tables:
        task = dag.get_task(task_id)
        task.sql = port_sql_to_mariadb(sql_template(dag, task_id))
    end = MARIADB_WINDOW_START + dt.timedelta(days=1)

    def run_night() -> tuple[dict, dict]:
        dag_run = dag.test(logical_date=end, run_conf={"warehouse_conn_id": "warehouse_mariadb", **EXACT_WINDOW})
        states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
        with create_session() as session:
            rows = session.query(XComModel).filter_by(dag_id=NIGHTLY, run_id=dag_run.run_id, key="return_value")
            return states, {row.task_id: row.value for row in rows}

    states, summaries = run_night()

    assert states == dict.fromkeys(tables, "success")
    received = {e["event_id"]: e["event_name"] for e in sandbox.events()}
    assert len(received) == len(sandbox.events()), "an event arrived twice"
    for task_id, table in tables.items():
        summary = summaries[task_id]
        window_ids = expected_event_ids(table, MARIADB_WINDOW_START, end)
        sent_ids = {i for i in received if i.startswith("crm-" if table == CRM_TABLE else "pos-")}
        assert summary["rows_read"] == len(window_ids), task_id
        assert sent_ids <= window_ids and len(sent_ids) == summary["delivered"] > 0.9 * len(window_ids), task_id
        assert summary["invalid"] == summary["rows_read"] - summary["delivered"], task_id
    assert set(received.values()) >= {"Lead", "CompleteRegistration", "Purchase"}
    with engine.connect() as conn:
        logged = dict(conn.execute(sa.text("SELECT status, COUNT(*) FROM gravity_delivery_log GROUP BY status")).all())
    assert logged["delivered"] == len(received)
    requests = sandbox.stats()["requests"]

    states, again = run_night()

    assert states == dict.fromkeys(tables, "success")
    for task_id in tables:
        assert again[task_id]["skipped_delivered"] == summaries[task_id]["delivered"], task_id
        assert again[task_id]["delivered"] == 0, task_id
    assert sandbox.stats()["requests"] == requests, "the second run of the night sent nothing"
