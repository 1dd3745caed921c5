"""
Round 3 of the adversarial review, on the real PostgreSQL and SQLite: the psycopg named-cursor read path under
odd SQL and a warehouse that drops mid-read, on psycopg 2 and psycopg 3; the DAG window's lookback of centuries.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import urllib.parse

import pendulum
import pytest
import sqlalchemy as sa

from airflow_provider_gravity.conversions.errors import ColumnContractError
from airflow_provider_gravity.conversions.read.chunks import stream_query
from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator
from tests.integration.test_warehouse_drop import (
    ROWS,
    cut_when_gravity_is_answering,
    delivery_log_statuses,
    history_rows,
    seed_orders,
)
from tests.support.airflow_fixtures import run_dag_test, single_task_dag, task_states
from tests.support.databases import POSTGRES_URL, airflow_uri
from tests.support.sandbox_server import gravity_connection_json
from tests.support.tcp_proxy import CuttableProxy

DRIVERS = ("psycopg2", "psycopg")


def warehouse_uri(url: sa.URL, driver: str) -> str:
    """The Airflow connection URI of ``url`` whose PostgresHook reads with ``driver`` (extra sqlalchemy_scheme)."""
    scheme = urllib.parse.quote(f"postgresql+{driver}", safe="")
    return f"{airflow_uri(url.render_as_string(hide_password=False))}?sqlalchemy_scheme={scheme}"


def driver_engine(driver: str, url: str = POSTGRES_URL) -> sa.Engine:
    return sa.create_engine(sa.make_url(url).set(drivername=f"postgresql+{driver}"))


# -- odd SQL on the named cursor ---------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT order_id, note FROM {t} WHERE note LIKE '50%' AND order_id % 2 = 0 ORDER BY order_id",
        "SELECT order_id, note FROM {t} WHERE note LIKE '50%' AND order_id % 2 = 0 ORDER BY order_id;\n",
        "-- even orders of 50%\nSELECT order_id, note FROM {t} WHERE note LIKE '50%' AND order_id % 2 = 0 ORDER BY 1",
        "WITH even AS (SELECT * FROM {t} WHERE order_id % 2 = 0) SELECT order_id, note FROM even "
        "WHERE note LIKE '50%' ORDER BY order_id -- trailing comment",
    ],
)
def test_percent_signs_semicolons_comments_and_ctes_read_the_same_rows_on_both_drivers(postgres, driver, sql):
    engine, schema = postgres
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE {schema}.orders (order_id int, note text)")
        connection.exec_driver_sql(
            f"INSERT INTO {schema}.orders SELECT g, CASE WHEN g %% 3 = 0 THEN '50%% off' ELSE 'full' END "
            "FROM generate_series(1, 30) AS g"
        )
    reader = driver_engine(driver)
    try:
        frames = list(stream_query(reader, sql.format(t=f"{schema}.orders"), None, 4))
    finally:
        reader.dispose()

    read = [row for frame in frames for row in frame.itertuples(index=False, name=None)]
    assert read == [(g, "50% off") for g in range(6, 31, 6)]


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_query_of_two_statements_is_refused_on_both_drivers_instead_of_reading_the_first_one(postgres, driver):
    engine, schema = postgres
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE {schema}.orders AS SELECT g AS order_id FROM generate_series(1, 9) g")
    reader = driver_engine(driver)
    sql = f"SELECT order_id FROM {schema}.orders WHERE order_id < 5; SELECT order_id FROM {schema}.orders"
    try:
        # One refusal on both: psycopg 3's own SyntaxError would be retried, and fail the same way each time.
        with pytest.raises(ColumnContractError, match="more than one SQL statement"):
            list(stream_query(reader, sql, None, 100))
    finally:
        reader.dispose()


def test_the_operator_on_psycopg2_fails_a_query_of_two_statements_before_sending_anything(
    postgres, sandbox, airflow_db, monkeypatch
):
    """psycopg 2 ran both and held the first one's rows: the night went green with half of what it selects."""
    engine, schema = postgres
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"CREATE TABLE {schema}.orders AS SELECT g AS order_id, now() - interval '1 hour' AS created_at, "
            "'buyer' || g || '@example.com' AS email FROM generate_series(1, 40) AS g"
        )
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, max_retries=0))
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", warehouse_uri(sa.make_url(POSTGRES_URL), "psycopg2"))
    select = f"SELECT order_id AS event_id, created_at AS event_time, email AS em FROM {schema}.orders"
    dag = single_task_dag(
        "gravity_adversary_two_statements",
        SendConversionsOperator,
        # With parameters: the cursor path, as every query with DB-API parameters is read.
        sql=f"{select} WHERE order_id <= %(last)s ORDER BY order_id; {select} ORDER BY order_id",
        parameters={"last": 20},
        conn_id="warehouse",
        event_name="Purchase",
        retries=0,
    )

    dag_run, _ = run_dag_test(dag)

    assert task_states(dag_run)["send"][0] == "failed"
    assert sandbox.stats()["requests"] == 0 and sandbox.events() == []


# -- the warehouse drops mid-read, on both drivers ----------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_warehouse_dropped_mid_read_on_either_driver_leaves_every_answer_logged_and_a_clear_error(
    driver, postgres, sandbox, airflow_db, monkeypatch, caplog
):
    engine, schema = postgres
    seed_orders(engine, f"{schema}.orders")
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, max_retries=2, timeout=10))
    monkeypatch.setenv("AIRFLOW_CONN_LEDGER", airflow_uri(POSTGRES_URL))
    upstream = sa.make_url(POSTGRES_URL)
    proxy = CuttableProxy((upstream.host, upstream.port), bytes_per_second=3_000_000)
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", warehouse_uri(upstream.set(port=proxy.port), driver))
    sandbox.faults({"kind": "slow", "seconds": 1.5, "count": 12})
    arguments = {
        "sql": f"SELECT order_id AS event_id, created_at AS event_time, email AS em, note AS custom_note "
        f"FROM {schema}.orders WHERE order_id > %(after)s ORDER BY order_id",
        "parameters": {"after": 0},
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
    stop = threading.Event()
    cutter = threading.Thread(target=cut_when_gravity_is_answering, args=(proxy, sandbox, stop), daemon=True)
    cutter.start()
    caplog.set_level(logging.ERROR, logger="sqlalchemy.pool")
    try:
        dropped_run, _ = run_dag_test(
            single_task_dag(f"gravity_adversary_drop_{driver}", SendConversionsOperator, **arguments)
        )
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
    assert stopped["outcome"] == "incomplete" and stopped["delivered"] == len(held_by_gravity)
    assert "OperationalError" in stopped["failure"], "the history names the driver's error"
    # The dropped connection is discarded, not rolled back: no second traceback in the task log.
    assert not [record for record in caplog.records if "Exception during reset" in record.getMessage()]


# -- the DAG window's lookback of centuries, on the real databases -----------------------------------------


def test_a_lookback_of_centuries_selects_the_old_rows_on_postgres_and_sqlite(postgres, gravity_window, tmp_path):
    """strftime wrote the year 3 as '3-02-08', which PostgreSQL read as 2008-03-02 and SQLite sorted after 2026."""
    engine, schema = postgres
    night = pendulum.datetime(2026, 6, 2, 3)
    window = gravity_window.resolve_window(
        params={"lookback_days": 739_000, "delivery_log_table": "gravity_delivery_log"},
        data_interval_start=night,
        data_interval_end=night.add(days=1),
        logical_date=night,
    )
    rows = [(1, "2005-01-01 00:00:00"), (2, "2026-06-02 12:00:00"), (3, "2026-06-03 03:00:00")]
    select = "SELECT id FROM {t} WHERE created_at >= '{w.start}' AND created_at < '{w.end}' ORDER BY id"

    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE {schema}.orders (id int, created_at timestamp)")
        connection.exec_driver_sql(f"INSERT INTO {schema}.orders VALUES (%s, %s)", rows)
        on_postgres = [row[0] for row in connection.exec_driver_sql(select.format(t=f"{schema}.orders", w=window))]
    with sqlite3.connect(tmp_path / "warehouse.db") as sqlite:
        sqlite.execute("CREATE TABLE orders (id integer, created_at text)")
        sqlite.executemany("INSERT INTO orders VALUES (?, ?)", rows)
        on_sqlite = [row[0] for row in sqlite.execute(select.format(t="orders", w=window))]

    assert on_postgres == on_sqlite == [1, 2]


# -- an asset event never follows a dry run, even one whose flag is mistyped --------------------------------


@pytest.mark.parametrize(("dry_run", "state"), [("ture", "failed"), (" True ", "success"), ("yes", "success")])
def test_a_dry_run_flag_that_is_not_a_bool_sends_nothing_and_emits_no_asset_event(
    postgres, sandbox, airflow_db, monkeypatch, dry_run, state
):
    """'ture' read as false: the run delivered for real and its asset event started the downstream DAGs."""
    from tests.integration.test_assets import asset_events

    engine, schema = postgres
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"CREATE TABLE {schema}.orders AS SELECT g AS order_id, now() - interval '1 hour' AS created_at, "
            "'buyer' || g || '@example.com' AS email FROM generate_series(1, 30) AS g"
        )
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, max_retries=0))
    dag_id = f"gravity_adversary_dry_run_{dry_run.strip().lower()}"
    dag = single_task_dag(
        dag_id,
        SendConversionsOperator,
        sql=f"SELECT order_id AS event_id, created_at AS event_time, email AS em FROM {schema}.orders",
        conn_id="warehouse",
        event_name="Purchase",
        dry_run=dry_run,
        retries=0,
    )

    dag_run, _ = run_dag_test(dag)

    assert task_states(dag_run)["send"][0] == state
    assert sandbox.stats()["requests"] == 0 and sandbox.events() == []
    host = sandbox.url.split("://")[1]
    assert asset_events(f"gravity://{host}/conversions/Purchase", dag_id) == []


# -- the same on MariaDB: mysqlclient connects with multiple statements on ---------------------------------


@pytest.mark.parametrize(
    ("sql", "read"),
    [
        ("SELECT id FROM orders WHERE id < 5; SELECT id FROM orders", None),
        ("SELECT id FROM orders WHERE id < 5;", [1, 2, 3, 4]),
        ("-- the first four\nSELECT id FROM orders WHERE id < 5; -- done", [1, 2, 3, 4]),
        ("SELECT id FROM orders WHERE id < 5 AND 'a%' LIKE 'a%%'", [1, 2, 3, 4]),
    ],
)
def test_a_query_of_two_statements_is_refused_on_mariadb_before_a_row_is_read(mariadb, sql, read):
    """mysqlclient read the first statement's rows and dropped the rest: a night delivered short, green."""
    from airflow.providers.mysql.hooks.mysql import MySqlHook

    from airflow_provider_gravity.conversions.read.chunks import read_chunks

    engine, _ = mariadb
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE orders (id int)")
        connection.exec_driver_sql("INSERT INTO orders VALUES " + ", ".join(f"({i})" for i in range(1, 10)))
    hook = MySqlHook(mysql_conn_id="warehouse_mariadb")

    chunks = read_chunks(hook, sql, None, 100)
    try:
        if read is None:
            with pytest.raises(sa.exc.ProgrammingError, match="1064"):
                next(chunks)
        else:
            assert [row for frame in chunks for row in frame["id"].tolist()] == read
    finally:
        chunks.close()
