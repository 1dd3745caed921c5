"""
Issue 17, items 4, 5 and 8: cells the read paths used to fail on or to round, read with the drivers the operator
runs (PostgresHook's psycopg 3, not the tests' psycopg2 seeding engine; SQLite's own driver) and through the
operator itself.

- Item 4: PostgreSQL ``infinity``, ``-infinity``, BC and year-10000 dates and timestamps made psycopg 3 raise
  ``DataError``, failing the task and every retry. They are held at Python's years 1 and 9999, as the Arrow path
  holds them, so they get the Arrow path's reasons.
- Item 5: a BLOB that is not UTF-8 failed the whole SQLite read (pandas decoded it). It is an unreadable cell.
- Item 8: integral NUMERIC in ``value`` and ``custom_<key>`` was rounded through float64 on both read paths; a
  uuid, inet, cidr, time or interval in a ``custom_<key>`` refused the row.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time

import pandas as pd
import pytest

from airflow_provider_gravity.conversions.cells import cell_text
from airflow_provider_gravity.conversions.events.build import EventSettings, build_events
from airflow_provider_gravity.conversions.read.arrow import PostgresAdbcSource, arrow_chunks, arrow_source_for
from airflow_provider_gravity.conversions.read.chunks import read_chunks, stream_query
from airflow_provider_gravity.conversions.read.columns import normalize_column_names
from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator
from tests.support.airflow_fixtures import run_dag_test, single_task_dag, task_states
from tests.support.databases import OPERATOR_POSTGRES_DRIVER, operator_postgres_hook
from tests.support.sandbox_server import gravity_connection_json

NOW = int(time.time())
ARROW_LOG = "as Arrow batches"
CURSOR_LOG = "with a server-side cursor"


@pytest.fixture
def gravity_connection(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, max_retries=8, timeout=5))
    return sandbox


def received_by_id(sandbox) -> dict[str, dict]:
    events = sandbox.events()
    assert len(events) == len({event["event_id"] for event in events})
    return {event["event_id"]: event for event in events}


def task_log(caplog, capfd) -> str:
    printed = capfd.readouterr()
    return "\n".join([printed.out, printed.err, caplog.text, *(record.getMessage() for record in caplog.records)])


def built_rows(frames) -> list[tuple[str | None, str | None]]:
    """Each row's ``(event JSON, reason)``, as the operator builds them."""
    settings = EventSettings(event_name="Purchase", timezone="UTC")
    rows = []
    for frame in frames:
        frame.columns = normalize_column_names(frame.columns)
        chunk = build_events(frame, settings, NOW)
        rows.extend(zip(chunk.encoded, chunk.reasons, strict=True))
    return rows


def test_postgres_hook_reads_with_psycopg_3_the_driver_these_tests_read_with(postgres):
    engine = operator_postgres_hook().get_sqlalchemy_engine()
    try:
        assert engine.dialect.driver == OPERATOR_POSTGRES_DRIVER == "psycopg"
    finally:
        engine.dispose()


# -- item 4: times beyond Python's years 1 to 9999 -----------------------------------------------------------------

#: (PostgreSQL literal, what the cell reads as text, its reason as event_time).
BEYOND_PYTHON = [
    ("'infinity'", "9999-12-31", "event_time_in_future"),
    ("'-infinity'", "0001-01-01", "bad_event_time"),
    ("'0044-03-15 BC'", "0001-01-01", "bad_event_time"),
    ("'10000-01-01'", "9999-12-31", "event_time_in_future"),
]
TIME_TYPES = ["date", "timestamp", "timestamptz"]


def _times_table(engine, schema: str, column_type: str) -> str:
    table = f"{schema}.times"
    good = f"to_timestamp({NOW - 3_600})::{column_type}" if column_type != "date" else "current_date - 1"
    values = ", ".join(f"({seq}, {literal}::{column_type})" for seq, (literal, _, _) in enumerate(BEYOND_PYTHON, 2))
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE {table} (seq int, at {column_type})")
        connection.exec_driver_sql(f"INSERT INTO {table} VALUES (1, {good}), {values}")
    return table


@pytest.mark.parametrize("column_type", TIME_TYPES)
def test_times_beyond_python_years_get_the_arrow_paths_reasons_on_the_cursor_path(postgres, column_type, caplog):
    """psycopg 3 raised DataError ('date too large (after year 10K)') on the first such cell: the read failed."""
    engine, schema = postgres
    table = _times_table(engine, schema, column_type)
    hook = operator_postgres_hook()
    as_event_time = f"SELECT 'e-' || seq AS event_id, at AS event_time FROM {table} WHERE seq >= %(first)s ORDER BY seq"
    as_custom = (
        f"SELECT 'e-' || seq AS event_id, to_timestamp({NOW - 3_600}) AS event_time, at AS custom_at FROM {table}"
        " WHERE seq >= %(first)s ORDER BY seq"
    )

    with caplog.at_level(logging.INFO, logger="airflow_provider_gravity.conversions.read.chunks"):
        timed = built_rows(read_chunks(hook, as_event_time, {"first": 1}, 2))
        custom_frames = list(read_chunks(hook, as_custom, {"first": 1}, 2))
    assert CURSOR_LOG in caplog.text and ARROW_LOG not in caplog.text

    assert [reason for _, reason in timed] == [None] + [reason for _, _, reason in BEYOND_PYTHON]
    held = [cell_text(frame["custom_at"].iloc[i]) for frame in custom_frames for i in range(len(frame))]
    assert [text[:10] for text in held[1:]] == [text for _, text, _ in BEYOND_PYTHON]
    custom = built_rows(custom_frames)
    assert [reason for _, reason in custom] == [None] * 5
    assert f'"at":"{held[1]}"' in custom[1][0]

    # Without parameters: a date column is read by the cursor too; timestamps by Arrow, which holds them alike.
    for sql in (as_event_time, as_custom):
        unparameterized = sql.replace("%(first)s", "1")
        cursor_rows = built_rows(read_chunks(hook, sql, {"first": 1}, 2))
        assert built_rows(read_chunks(hook, unparameterized, None, 2)) == cursor_rows
        if column_type != "date":
            source = arrow_source_for(hook)
            assert isinstance(source, PostgresAdbcSource)
            assert built_rows(arrow_chunks(source.record_batches(unparameterized), 2)) == cursor_rows


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
@pytest.mark.parametrize("column_type", TIME_TYPES)
def test_both_drivers_hold_them_in_cells_and_in_arrays(postgres, column_type, driver):
    """
    PostgresHook reads with psycopg2 where SQLAlchemy is 1.4 (Airflow 3.1), or with ``sqlalchemy_scheme`` set to
    it: psycopg2 held only ``infinity`` and raised ``ValueError: year 10000 is out of range`` on the others.
    """
    seeding, schema = postgres  # the tests' psycopg2 engine
    table = _times_table(seeding, schema, column_type)
    engine = seeding if driver == "psycopg2" else operator_postgres_hook().get_sqlalchemy_engine()
    assert engine.dialect.driver == driver
    sql = f"SELECT seq, at, ARRAY[at, NULL] AS ats FROM {table} ORDER BY seq"

    try:
        frame = pd.concat(stream_query(engine, sql, None, 2), ignore_index=True)
    finally:
        if engine is not seeding:
            engine.dispose()

    held = [text for _, text, _ in BEYOND_PYTHON]
    assert [cell_text(cell)[:10] for cell in frame["at"].tolist()[1:]] == held
    assert [cell_text(cells[0])[:10] for cells in frame["ats"].tolist()[1:]] == held


def test_the_operator_reads_times_beyond_python_years_and_finishes_the_run(postgres, gravity_connection, airflow_db):
    """Before: the task failed with DataError, and so did every retry."""
    engine, schema = postgres
    sandbox = gravity_connection
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE {schema}.orders (id text, at timestamptz, day date)")
        connection.exec_driver_sql(
            f"INSERT INTO {schema}.orders VALUES ('ok-1', now() - interval '1 hour', 'infinity'),"
            f" ('ok-2', now() - interval '1 hour', '0044-03-15 BC'), ('ok-3', now() - interval '1 hour', NULL),"
            f" ('inf', 'infinity', '2026-01-01'), ('minus-inf', '-infinity', NULL), ('bc', '0044-03-15 BC', NULL),"
            f" ('y10k', '10000-01-01', '10000-01-01')"
        )
    dag = single_task_dag(
        "gravity_times_beyond_python",
        SendConversionsOperator,
        sql=f"SELECT id AS event_id, at AS event_time, day AS custom_day, id AS external_id FROM {schema}.orders"
        " WHERE id <> %(skip)s ORDER BY id",
        parameters={"skip": "none"},
        conn_id="warehouse",
        event_name="Purchase",
        chunk_size=2,
        max_error_rate=1,
    )

    dag_run, returned = run_dag_test(dag)

    assert task_states(dag_run)["send"][0] == "success"
    summary = returned["send"]
    assert summary["invalid_reasons"] == {"event_time_in_future": 2, "bad_event_time": 2}
    assert summary["delivered"] == 3
    received = received_by_id(sandbox)
    assert received["ok-1"]["custom_data"] == {"day": "9999-12-31"}
    assert received["ok-2"]["custom_data"] == {"day": "0001-01-01"}
    assert "custom_data" not in received["ok-3"]


# -- item 5: a BLOB that is not UTF-8, read by the DB-API cursor path ------------------------------------------------


def _blob_warehouse(path, monkeypatch) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE orders (id TEXT, at INTEGER, blob BLOB, order_blob BLOB, email BLOB, n INT)")
        connection.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)",
            [
                ("bad-custom", NOW - 60, b"\xff\xfe\x00", None, None, 1),
                ("bad-order-id", NOW - 60, None, b"\xff", None, None),
                ("bad-email", NOW - 60, None, None, b"\xffbob@example.com", 9_007_199_254_740_993),
                ("good", NOW - 60, "Zoë".encode(), b"o-1", b"Bob@Example.com", None),
            ],
        )
    monkeypatch.setenv("AIRFLOW_CONN_BLOB_SQLITE", json.dumps({"conn_type": "sqlite", "host": str(path)}))


BLOB_SQL = (
    "SELECT id AS event_id, at AS event_time, blob AS custom_blob, order_blob AS order_id, email AS em,"
    " n AS custom_n, id AS external_id FROM orders ORDER BY id"
)


def test_a_blob_that_is_not_utf8_is_an_unreadable_cell_on_the_dbapi_cursor_path(tmp_path, monkeypatch, caplog):
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    _blob_warehouse(tmp_path / "blobs.db", monkeypatch)
    with caplog.at_level(logging.INFO, logger="airflow_provider_gravity.conversions.read.chunks"):
        frames = list(read_chunks(SqliteHook(sqlite_conn_id="blob_sqlite"), BLOB_SQL, None, 3))

    assert "DB-API cursor" in caplog.text
    assert [len(frame) for frame in frames] == [3, 1]
    rows = built_rows(frames)
    assert [reason for _, reason in rows] == ["bad_custom_data", None, None, None]  # in the order of id


def test_the_operator_reads_a_sqlite_blob_that_is_not_utf8_as_an_unreadable_cell(
    tmp_path, monkeypatch, gravity_connection, airflow_db
):
    """Before: UnicodeDecodeError from pandas (dtype_backend='numpy_nullable') failed the run."""
    sandbox = gravity_connection
    _blob_warehouse(tmp_path / "blobs.db", monkeypatch)
    dag = single_task_dag(
        "gravity_sqlite_blobs",
        SendConversionsOperator,
        sql=BLOB_SQL,
        conn_id="blob_sqlite",
        event_name="Purchase",
        chunk_size=3,
        max_error_rate=1,
    )

    dag_run, returned = run_dag_test(dag)

    assert task_states(dag_run)["send"][0] == "success"
    summary = returned["send"]
    assert summary["invalid_reasons"] == {"bad_custom_data": 1}
    assert summary["delivered"] == 3
    assert summary["field_drops"] == {"unreadable_order_id": 1, "unreadable_em": 1}
    received = received_by_id(sandbox)
    assert "order_id" not in received["bad-order-id"].get("custom_data", {})
    assert "em" not in received["bad-email"]["user_data"]
    assert received["bad-email"]["custom_data"] == {"n": 9_007_199_254_740_993}
    assert received["good"]["custom_data"] == {"blob": "Zoë", "order_id": "o-1"}


# -- item 8: every digit of an integral NUMERIC; uuid, inet, time and interval as text ----------------------------

NUMBERS = {
    "big": "9007199254740993",  # 2**53 + 1: float64 made it ...992
    "thirty": "123456789012345678901234567890",  # float64 made it 1.2345678901234568e+29
    "bigger": "1" + "0" * 60,
    "fraction": "19.90",
}


@pytest.fixture
def numbers_table(postgres):
    engine, schema = postgres
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE {schema}.numbers (id text, at timestamptz, n numeric)")
        connection.exec_driver_sql(
            f"INSERT INTO {schema}.numbers VALUES "
            + ", ".join(f"('{name}', now() - interval '1 hour', {number})" for name, number in NUMBERS.items())
        )
    return f"{schema}.numbers"


NUMBERS_SQL = (
    "SELECT id AS event_id, at AS event_time, n AS value, n AS custom_n, n AS order_id, id AS external_id"
    " FROM {table} WHERE id <> {skip} ORDER BY id"
)


@pytest.mark.parametrize("path", ["arrow", "cursor"])
def test_an_integral_numeric_keeps_every_digit_in_value_and_custom_data_on_both_read_paths(
    numbers_table, gravity_connection, airflow_db, path, caplog, capfd
):
    sandbox = gravity_connection
    caplog.set_level(logging.INFO)
    skip, parameters = ("'none'", None) if path == "arrow" else ("%(skip)s", {"skip": "none"})
    dag = single_task_dag(
        f"gravity_numeric_digits_{path}",
        SendConversionsOperator,
        sql=NUMBERS_SQL.format(table=numbers_table, skip=skip),
        parameters=parameters,
        conn_id="warehouse",
        event_name="Purchase",
    )

    dag_run, returned = run_dag_test(dag)

    assert task_states(dag_run)["send"][0] == "success"
    assert (ARROW_LOG if path == "arrow" else CURSOR_LOG) in task_log(caplog, capfd)
    assert returned["send"]["delivered"] == len(NUMBERS)
    received = received_by_id(sandbox)
    for name in ("big", "thirty", "bigger"):
        exact = int(NUMBERS[name])
        custom_data = received[name]["custom_data"]
        assert (custom_data["value"], custom_data["n"], custom_data["order_id"]) == (exact, exact, NUMBERS[name])
    assert received["fraction"]["custom_data"] == {"value": 19.9, "n": 19.9, "order_id": "19.9"}


OTHER_TYPES_SQL = """
SELECT 'e-1' AS event_id, now() - interval '1 hour' AS event_time, 'c-1' AS external_id,
       '0b8f9d6e-6b7a-4c39-9a53-3f0d2c4e5a61'::uuid AS custom_uuid, '10.1.2.3'::inet AS custom_ip,
       '10.1.2.3/24'::inet AS custom_ip_net, '2001:db8::/32'::cidr AS custom_cidr, '10:30:05'::time AS custom_at,
       '1 day 02:03:04.5'::interval AS custom_wait, '-5 minutes'::interval AS custom_early,
       '0b8f9d6e-6b7a-4c39-9a53-3f0d2c4e5a61'::uuid AS order_id, '10.1.2.3'::inet AS click_id
WHERE %(always)s
"""


def test_uuid_inet_cidr_time_and_interval_in_custom_data_are_sent_as_text(postgres, gravity_connection, airflow_db):
    """Before: each of these custom_<key> columns refused the row as bad_custom_data (json_safe knew no such type)."""
    sandbox = gravity_connection
    dag = single_task_dag(
        "gravity_custom_text_types",
        SendConversionsOperator,
        sql=OTHER_TYPES_SQL,
        parameters={"always": True},
        conn_id="warehouse",
        event_name="Purchase",
    )

    dag_run, returned = run_dag_test(dag)

    assert task_states(dag_run)["send"][0] == "success"
    assert (returned["send"]["delivered"], returned["send"]["invalid_reasons"]) == (1, {})
    event = received_by_id(sandbox)["e-1"]
    assert event["custom_data"] == {
        "uuid": "0b8f9d6e-6b7a-4c39-9a53-3f0d2c4e5a61",
        "ip": "10.1.2.3",
        "ip_net": "10.1.2.3/24",
        "cidr": "2001:db8::/32",
        "at": "10:30:05",
        "wait": "P1DT2H3M4.5S",
        "early": "-PT5M",
        "order_id": "0b8f9d6e-6b7a-4c39-9a53-3f0d2c4e5a61",
    }
    assert event["user_data"]["click_id"] == "10.1.2.3"
