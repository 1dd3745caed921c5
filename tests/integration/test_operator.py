"""SendConversionsOperator in real Airflow (dag.test()), reading real PostgreSQL and SQLite, sending to the sandbox."""

from __future__ import annotations

import json
import logging

import pytest

from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator
from tests.support.airflow_fixtures import run_dag_test, single_task_dag, task_states
from tests.support.messy_rows import expected_email, expected_event, expected_name, expected_phone, messy_orders
from tests.support.sandbox_server import gravity_connection_json
from tests.support.warehouse import SCALAR_SQL, load_orders_postgres, load_orders_sqlite

BUCKETS = ("delivered", "duplicate", "rejected", "invalid", "skipped_delivered", "undelivered")


def assert_every_row_in_one_bucket(summary: dict, rows: int) -> None:
    assert summary["rows_read"] == rows
    assert sum(summary[b] for b in BUCKETS) == rows


def make_dag(dag_id: str, **operator_kwargs):
    return single_task_dag(dag_id, SendConversionsOperator, **operator_kwargs)


@pytest.fixture
def gravity_connection(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, max_retries=8, timeout=5))
    return sandbox


def received_by_id(sandbox) -> dict[str, dict]:
    events = sandbox.events()
    assert len(events) == len({e["event_id"] for e in events})
    return {e["event_id"]: e for e in events}


def test_10000_messy_rows_from_postgres_arrive_exactly_as_computed_independently(
    postgres, gravity_connection, airflow_db
):
    engine, schema = postgres
    sandbox = gravity_connection
    orders = messy_orders(10_000)
    load_orders_postgres(engine, f"{schema}.orders", orders)
    sql = f"""
        SELECT order_id AS event_id, created_at AS event_time,
               CASE WHEN alt_email IS NULL THEN ARRAY[email] ELSE ARRAY[email, alt_email] END AS em,
               phone AS ph, first_name AS fn, last_name AS ln, customer_id AS external_id, country,
               total AS value, currency, order_id::text AS order_id
        FROM {schema}.orders ORDER BY order_id"""
    dag = make_dag(
        "gravity_pg_10k", sql=sql, conn_id="warehouse", event_name="Purchase", chunk_size=2_500, max_error_rate=0.05
    )

    dag_run, returned = run_dag_test(dag)

    assert task_states(dag_run)["send"][0] == "success"
    summary = returned["send"]
    assert_every_row_in_one_bucket(summary, 10_000)
    first_of_each = {str(o["order_id"]): o for o in reversed(orders)}
    duplicates = len(orders) - len(first_of_each)
    assert duplicates > 0
    assert summary["invalid_reasons"] == {"duplicate_in_run": duplicates}
    assert summary["delivered"] == len(first_of_each)
    expected = {i: expected_event(o, "Purchase") for i, o in first_of_each.items()}
    received = received_by_id(sandbox)
    assert received.keys() == expected.keys()
    for event_id, want in expected.items():
        got = received[event_id]
        assert {k: got.get(k) for k in want} == want, event_id
    stats = sandbox.stats()
    assert stats["plaintext_pii_seen"] == 0
    assert stats["largest_batch"] <= 1_000
    assert stats["redelivered"] == 0
    assert summary["events_sent"] == len(first_of_each)
    invalid_emails = sum(
        1 for o in orders for e in (o["email"], o["alt_email"]) if e and e.strip() and expected_email(e) is None
    )
    invalid_phones = sum(1 for o in orders if o["phone"] and expected_phone(o["phone"], o["country"] or "US") is None)
    assert summary["field_drops"]["invalid_email"] == invalid_emails
    assert summary["field_drops"]["invalid_phone"] == invalid_phones
    coverage = summary["match_key_coverage"]
    assert coverage["external_id"] == 1.0
    with_fn_ln = sum(
        1 for o in first_of_each.values() if expected_name(o["first_name"]) and expected_name(o["last_name"])
    )
    assert coverage["fn_ln"] == round(with_fn_ln / len(first_of_each), 4)
    print("10,000-row summary:", json.dumps(summary, indent=1))


def test_sqlite_and_postgres_give_the_same_sandbox_contents(
    postgres, gravity_connection, airflow_db, tmp_path, monkeypatch
):
    engine, schema = postgres
    sandbox = gravity_connection
    orders = messy_orders(1_500, seed=11)
    load_orders_postgres(engine, f"{schema}.orders", orders)
    sqlite_path = str(tmp_path / "warehouse.db")
    load_orders_sqlite(sqlite_path, "orders", orders)
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_SQLITE", json.dumps({"conn_type": "sqlite", "host": sqlite_path}))

    pg_run, pg_returned = run_dag_test(
        make_dag(
            "gravity_same_pg",
            sql=SCALAR_SQL.format(table=f"{schema}.orders"),
            conn_id="warehouse",
            event_name="Purchase",
            max_error_rate=0.05,
        )
    )
    from_postgres = received_by_id(sandbox)
    sandbox.reset()
    sqlite_run, sqlite_returned = run_dag_test(
        make_dag(
            "gravity_same_sqlite",
            sql=SCALAR_SQL.format(table="orders"),
            conn_id="warehouse_sqlite",
            event_name="Purchase",
            max_error_rate=0.05,
        )
    )
    from_sqlite = received_by_id(sandbox)

    assert len(from_postgres) > 1_000
    assert from_sqlite == from_postgres
    assert pg_returned["send"]["delivered"] == sqlite_returned["send"]["delivered"] == len(from_postgres)


def test_faults_in_the_middle_of_a_20000_row_run_lose_nothing(postgres, gravity_connection, airflow_db):
    engine, schema = postgres
    sandbox = gravity_connection
    orders = [o for o in messy_orders(20_000, seed=3)]
    load_orders_postgres(engine, f"{schema}.orders", orders)
    unique_ids = {o["order_id"] for o in orders}
    sandbox.faults(
        {"kind": "status", "status": 429, "retry_after": "1", "count": 3, "after": 2},
        {"kind": "status", "status": 503, "count": 2, "after": 2},
        {"kind": "drop", "count": 2, "after": 1},
        {"kind": "slow", "seconds": 1, "count": 2, "after": 1},
        {"kind": "status", "status": 502, "count": 1, "after": 1},
    )
    dag = make_dag(
        "gravity_faults",
        sql=SCALAR_SQL.format(table=f"{schema}.orders"),
        conn_id="warehouse",
        event_name="Purchase",
        chunk_size=5_000,
        max_error_rate=0.05,
    )

    dag_run, returned = run_dag_test(dag)

    summary = returned["send"]
    assert task_states(dag_run)["send"] == ("success", 1)
    assert_every_row_in_one_bucket(summary, 20_000)
    assert summary["delivered"] == len(unique_ids)
    assert summary["undelivered"] == 0
    assert summary["retries"] == 8, "3 x 429 + 2 x 503 + 2 drops + 1 x 502; the slow answers needed no retry"
    stats = sandbox.stats()
    assert stats["faults_served"] == 10
    assert stats["unique_events"] == len(unique_ids)
    assert stats["redelivered"] == 0


def test_a_batch_refused_whole_is_split_until_the_3_bad_events_are_isolated(postgres, gravity_connection, airflow_db):
    engine, schema = postgres
    sandbox = gravity_connection
    orders = messy_orders(1_000, seed=5)
    for i, order in enumerate(orders):
        order["order_id"] = 900_000 + i
    load_orders_postgres(engine, f"{schema}.orders", orders)
    poisoned = ["900017", "900500", "900999"]
    sandbox.faults({"kind": "poison", "event_ids": poisoned})
    dag = make_dag(
        "gravity_poison", sql=SCALAR_SQL.format(table=f"{schema}.orders"), conn_id="warehouse", event_name="Purchase"
    )

    dag_run, returned = run_dag_test(dag)

    summary = returned["send"]
    assert task_states(dag_run)["send"][0] == "success"
    assert summary["rejected"] == 3
    assert summary["delivered"] == 997
    assert sum(summary["rejected_errors"].values()) == 3
    assert all(reason.startswith("HTTP 400") for reason in summary["rejected_errors"])
    assert set(received_by_id(sandbox)) == {str(o["order_id"]) for o in orders} - set(poisoned)


def test_bad_api_key_fails_the_task_at_once_without_retry(postgres, sandbox, airflow_db, monkeypatch):
    engine, schema = postgres
    load_orders_postgres(engine, f"{schema}.orders", messy_orders(50, seed=1))
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, "revoked-key"))
    dag = make_dag(
        "gravity_bad_key", sql=SCALAR_SQL.format(table=f"{schema}.orders"), conn_id="warehouse", event_name="Purchase"
    )

    dag_run, _ = run_dag_test(dag)

    assert task_states(dag_run)["send"] == ("failed", 1)
    stats = sandbox.stats()
    assert stats["requests"] == 1
    assert stats["auth_failures"] == 1


def test_dry_run_sends_nothing_and_still_accounts_for_every_row(postgres, gravity_connection, airflow_db):
    engine, schema = postgres
    load_orders_postgres(engine, f"{schema}.orders", messy_orders(300, seed=2))
    dag = make_dag(
        "gravity_dry_run",
        sql=SCALAR_SQL.format(table=f"{schema}.orders"),
        conn_id="warehouse",
        event_name="Purchase",
        dry_run=True,
        max_error_rate=0.5,
    )

    dag_run, returned = run_dag_test(dag)

    summary = returned["send"]
    assert task_states(dag_run)["send"][0] == "success"
    assert summary["dry_run"] is True
    assert_every_row_in_one_bucket(summary, 300)
    assert summary["undelivered"] == 300 - summary["invalid"]
    assert gravity_connection.stats()["requests"] == 0


def test_a_dry_run_neither_creates_nor_writes_the_delivery_log_and_hashes_phones_as_the_connection_says(
    postgres, sandbox, airflow_db, monkeypatch
):
    import sqlalchemy as sa

    engine, schema = postgres
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, hash_phone_with_plus=True))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {schema}.orders AS SELECT 'o-1' AS event_id, extract(epoch FROM now())::bigint - 60 "
            "AS event_time, '+1 650 253 0000' AS ph, 'dollars' AS currency"
        )
    dag = make_dag(
        "gravity_dry_run_log",
        sql=f"SELECT * FROM {schema}.orders ORDER BY event_id",
        conn_id="warehouse",
        event_name="Purchase",
        dry_run=True,
        max_error_rate=1,
        delivery_log_table=f"{schema}.delivery_log",
    )

    dag_run, returned = run_dag_test(dag)

    assert task_states(dag_run)["send"][0] == "success"
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("delivery_log", schema=schema), "a dry run created the log"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {schema}.orders SET currency = 'USD'")
    dag_run, returned = run_dag_test(dag)
    assert returned["send"]["undelivered"] == 1
    dry = SendConversionsOperator(task_id="dry", sql="SELECT 1", conn_id="warehouse", dry_run=True)
    assert dry._event_settings(dry_run=True).phone_with_plus is True, "previews hash phones as the connection says"
    monkeypatch.delenv("AIRFLOW_CONN_GRAVITY_DEFAULT")
    without = SendConversionsOperator(task_id="dry2", sql="SELECT 1", conn_id="warehouse", dry_run=True)
    assert without._event_settings(dry_run=True).phone_with_plus is False, "a dry run needs no Gravity connection"


def test_an_unknown_column_fails_before_anything_is_sent(postgres, gravity_connection, airflow_db):
    engine, schema = postgres
    load_orders_postgres(engine, f"{schema}.orders", messy_orders(20, seed=4))
    sql = f"SELECT order_id AS event_id, created_at AS event_time, email AS emial FROM {schema}.orders"
    dag = make_dag("gravity_typo", sql=sql, conn_id="warehouse", event_name="Purchase")

    dag_run, _ = run_dag_test(dag)

    assert task_states(dag_run)["send"] == ("failed", 1)
    assert gravity_connection.stats()["requests"] == 0


def test_error_rate_above_the_threshold_fails_after_the_whole_run(postgres, gravity_connection, airflow_db):
    engine, schema = postgres
    orders = messy_orders(200, seed=9)
    for order in orders[:20]:
        order["currency"] = "dollars"
    load_orders_postgres(engine, f"{schema}.orders", orders)
    dag = make_dag(
        "gravity_error_rate",
        sql=SCALAR_SQL.format(table=f"{schema}.orders"),
        conn_id="warehouse",
        event_name="Purchase",
        max_error_rate=0.05,
    )

    dag_run, _ = run_dag_test(dag)

    assert task_states(dag_run)["send"] == ("failed", 1)
    stats = gravity_connection.stats()
    assert stats["by_status"]["ok"] == len({o["order_id"] for o in orders[20:]}), "the run went to its end"
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        (kept,) = session.query(XComModel).filter_by(dag_id="gravity_error_rate", key="gravity_summary").all()
    assert kept.value["invalid_reasons"]["bad_currency"] == 20


def test_a_connection_that_is_not_sql_is_refused_clearly(gravity_connection):
    operator = SendConversionsOperator(task_id="send", sql="SELECT 1", conn_id="gravity_default")

    with pytest.raises(Exception, match="not a SQL hook"):
        operator.execute(context={})
    assert gravity_connection.stats()["requests"] == 0


def test_batch_size_above_1000_is_refused_when_the_dag_is_written():
    with pytest.raises(ValueError, match="batch_size"):
        SendConversionsOperator(task_id="send", sql="SELECT 1", conn_id="x", batch_size=1_001)


def test_task_retries_are_airflows_and_the_retry_policy_fails_what_a_retry_cannot_fix():
    """Issue 11: the operator no longer forces retries=3 over ``[core] default_task_retries``."""
    from airflow.providers.standard.operators.empty import EmptyOperator

    from airflow_provider_gravity.exceptions import GravityRunIncomplete, GravityRunRefused

    operator = SendConversionsOperator(task_id="send", sql="SELECT 1", conn_id="x")

    assert operator.retries == EmptyOperator(task_id="empty").retries
    assert SendConversionsOperator(task_id="s", sql="SELECT 1", conn_id="x", retries=4).retries == 4
    assert {"sql", "parameters", "conn_id", "database", "hook_params", "dry_run"} <= set(operator.template_fields)
    assert operator.template_ext == (".sql",)
    policy = getattr(operator, "retry_policy", None)
    try:
        from airflow.sdk import RetryAction
    except ImportError:  # Airflow before 3.3: no retry policies; GravityRunRefused is an AirflowFailException
        assert policy is None
        return
    decide = policy.evaluate
    assert decide(GravityRunRefused("bad key"), try_number=1, max_tries=4, context=None).action == RetryAction.FAIL
    assert decide(GravityRunIncomplete("503"), try_number=1, max_tries=4, context=None).action == RetryAction.RETRY


def test_provider_info_is_valid_for_airflows_own_schema():
    import importlib.resources

    import jsonschema

    from airflow_provider_gravity import get_provider_info
    from airflow_provider_gravity.hooks.gravity import GravityHook

    def schema(name: str) -> dict:
        return json.loads(importlib.resources.files("airflow").joinpath(name).read_text())

    info = get_provider_info()
    jsonschema.validate(info, schema("provider_info.schema.json"))
    behaviour = GravityHook.get_ui_field_behaviour()
    jsonschema.validate(behaviour, schema("customized_form_field_behaviours.schema.json"))
    assert set(behaviour) == {"hidden_fields", "relabeling", "placeholders"}, "the keys Airflow reads"
    fields = info["connection-types"][0]["conn-fields"]
    assert all("default" in field["schema"] for field in fields.values())


def test_durable_false_turns_resuming_off_and_a_missing_state_store_is_explained_once_per_task(caplog):
    store = object()
    durable = SendConversionsOperator(task_id="d", sql="SELECT 1", conn_id="x")
    not_durable = SendConversionsOperator(task_id="n", sql="SELECT 1", conn_id="x", durable=False)
    caplog.set_level(logging.WARNING)

    assert durable._state_store({"task_state_store": store}, False) is store
    assert not_durable._state_store({"task_state_store": store}, False) is None
    assert durable._state_store({}, True) is None
    assert durable._state_store({}, True) is None
    assert caplog.text.count("no task state store") == 1
    assert "the delivery log makes the retry skip every event already delivered" in caplog.text
    another_task = SendConversionsOperator(task_id="a", sql="SELECT 1", conn_id="x")
    assert another_task._state_store({}, False) is None
    assert caplog.text.count("no task state store") == 2, "each task's log explains it, not only the first's"


def test_openlineage_reports_the_tables_the_query_reads_and_gravity_as_output(postgres):
    engine, schema = postgres
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {schema}.orders (id BIGINT, ts TIMESTAMP, cid BIGINT)")
        conn.exec_driver_sql(f"CREATE TABLE {schema}.customers (id BIGINT, email TEXT)")
    sql = (
        f"SELECT o.id AS event_id, o.ts AS event_time, c.email AS em FROM {schema}.orders o "
        f"JOIN {schema}.customers c ON c.id = o.cid ORDER BY event_id"
    )
    operator = SendConversionsOperator(task_id="send", sql=sql, conn_id="warehouse", event_name="Purchase")

    lineage = operator.get_openlineage_facets_on_complete(None)

    assert [output.namespace for output in lineage.outputs] == ["gravity://api.trygravity.ai"]
    assert lineage.outputs[0].name == "conversions/Purchase"
    assert {dataset.name for dataset in lineage.inputs} == {f"test.{schema}.orders", f"test.{schema}.customers"}
    assert {dataset.namespace for dataset in lineage.inputs} == {"postgres://127.0.0.1:5432"}


def test_lineage_never_fails_the_task_when_the_warehouse_cannot_be_reached(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", "postgres://u@db.invalid:5432/shop")
    operator = SendConversionsOperator(task_id="send", sql="SELECT 1", conn_id="warehouse", event_name="Lead")

    lineage = operator.get_openlineage_facets_on_complete(None)

    assert lineage.inputs == [] and lineage.outputs[0].name == "conversions/Lead"


def test_percent_signs_in_postgres_sql_are_literal_without_parameters(postgres, gravity_connection, airflow_db):
    engine, schema = postgres
    orders = messy_orders(300, seed=8)
    load_orders_postgres(engine, f"{schema}.orders", orders)
    sql = SCALAR_SQL.format(table=f"{schema}.orders").replace(
        "ORDER BY", "WHERE order_id % 2 = 0 AND currency NOT LIKE 'x%' ORDER BY"
    )
    dag = make_dag("gravity_percent", sql=sql, conn_id="warehouse", event_name="Purchase", max_error_rate=0.5)

    dag_run, returned = run_dag_test(dag)

    assert task_states(dag_run)["send"][0] == "success"
    even = {o["order_id"] for o in orders if o["order_id"] % 2 == 0}
    assert {int(i) for i in received_by_id(gravity_connection)} == even


BIG_IDS_SQL = """
SELECT event_id, event_time, external_id, order_id, email AS em FROM {table} ORDER BY event_time, email"""


def _big_id_rows(now: int) -> list[tuple]:
    big = 1_152_921_504_606_846_977  # 2**60 + 1: float64 would send ...976 and merge it with its neighbour
    return [
        (big, now - 60, big + 2, big + 4, "a@example.com"),
        (big - 1, now - 60, None, None, "b@example.com"),
        (None, now - 60, big, big, "c@example.com"),
    ]


@pytest.mark.parametrize("source", ["postgres", "sqlite"])
def test_big_integer_ids_keep_every_digit_beside_nulls_on_both_read_paths(
    source, postgres, gravity_connection, airflow_db, tmp_path, monkeypatch
):
    """Issue 9, defect 3: the streaming cursor (PostgreSQL) and get_df_by_chunks (SQLite) both read exactly."""
    import sqlite3
    import time

    sandbox = gravity_connection
    rows = _big_id_rows(int(time.time()))
    columns = "event_id BIGINT, event_time BIGINT, external_id BIGINT, order_id BIGINT, email TEXT"
    if source == "postgres":
        engine, schema = postgres
        table, conn_id = f"{schema}.big_ids", "warehouse"
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE {table} ({columns})")
            conn.exec_driver_sql(f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s)", rows)
    else:
        path = str(tmp_path / "big.db")
        with sqlite3.connect(path) as conn:
            conn.execute(f"CREATE TABLE big_ids ({columns})")
            conn.executemany("INSERT INTO big_ids VALUES (?, ?, ?, ?, ?)", rows)
        monkeypatch.setenv("AIRFLOW_CONN_BIG_SQLITE", json.dumps({"conn_type": "sqlite", "host": path}))
        table, conn_id = "big_ids", "big_sqlite"

    dag = make_dag(
        f"gravity_big_ids_{source}",
        sql=BIG_IDS_SQL.format(table=table),
        conn_id=conn_id,
        event_name="Purchase",
        chunk_size=2,
        max_error_rate=0.5,
    )
    dag_run, returned = run_dag_test(dag)

    summary = returned["send"]
    assert (summary["delivered"], summary["invalid_reasons"]) == (2, {"missing_event_id": 1})
    received = received_by_id(sandbox)
    assert set(received) == {"1152921504606846977", "1152921504606846976"}
    first = received["1152921504606846977"]
    assert first["user_data"]["external_id"] == ["1152921504606846979"]
    assert first["custom_data"]["order_id"] == "1152921504606846981"


def test_over_long_ids_and_names_are_dead_letters_not_a_crash(postgres, gravity_connection, airflow_db):
    """Issue 9, defect 5: the dead-letter write of an over-long key raised."""
    import sqlalchemy as sa

    engine, schema = postgres
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {schema}.long_ids (event_id TEXT, event_name TEXT, event_time BIGINT)")
        minute_ago = "extract(epoch FROM now())::bigint - 60"
        conn.exec_driver_sql(
            f"INSERT INTO {schema}.long_ids VALUES (repeat('x', 300), 'Purchase', {minute_ago}),"
            f" ('ok-1', repeat('N', 400), {minute_ago}), ('ok-2', 'Purchase', {minute_ago})"
        )
    dag = make_dag(
        "gravity_long_ids",
        sql=f"SELECT * FROM {schema}.long_ids ORDER BY event_id",
        conn_id="warehouse",
        delivery_log_table=f"{schema}.delivery_log",
        max_error_rate=1,
    )

    dag_run, returned = run_dag_test(dag)

    assert task_states(dag_run)["send"][0] == "success"
    summary = returned["send"]
    assert summary["invalid_reasons"] == {"event_id_too_long": 1, "event_name_too_long": 1}
    assert summary["delivered"] == 1
    with engine.connect() as conn:
        keys = conn.execute(sa.text(f"SELECT event_name, event_id, status FROM {schema}.delivery_log")).all()
    dead = [(name, event_id) for name, event_id, status in keys if status == "invalid"]
    assert len(dead) == 2 and all(len(name) <= 255 and len(event_id) <= 255 for name, event_id in dead)
    assert any(event_id.startswith("x" * 100) and "~sha256:" in event_id for _, event_id in dead)


# -- MariaDB (connection type mysql: apache-airflow-providers-mysql, mysqlclient), read with a server-side cursor --

MARIADB_STREAMING_LOG = "Streaming mysql rows with a server-side cursor, {chunk_size} rows at a time."


@pytest.fixture
def mariadb_reads(monkeypatch):
    """
    What the operator's streaming read did on MariaDB: the DB-API cursor class of each statement and the
    size of each chunk the stream yielded.
    """
    import sqlalchemy as sa

    from airflow_provider_gravity.conversions.read import chunks as reading

    seen = {"cursors": [], "chunks": []}
    original = reading.frame_of_rows

    def frame_of_rows(rows, columns):
        seen["chunks"].append(len(rows))
        return original(rows, columns)

    def before_cursor_execute(conn, cursor, statement, parameters, context, executemany):
        if conn.dialect.name in ("mysql", "mariadb") and statement.lstrip().upper().startswith("SELECT"):
            seen["cursors"].append(type(cursor).__module__ + "." + type(cursor).__name__)

    monkeypatch.setattr(reading, "frame_of_rows", frame_of_rows)
    sa.event.listen(sa.Engine, "before_cursor_execute", before_cursor_execute)
    yield seen
    sa.event.remove(sa.Engine, "before_cursor_execute", before_cursor_execute)


def task_log(caplog, capfd) -> str:
    printed = capfd.readouterr()
    return "\n".join([printed.out, printed.err, caplog.text, *(r.getMessage() for r in caplog.records)])


def test_mariadb_and_postgres_give_the_same_sandbox_contents(
    postgres, mariadb, gravity_connection, airflow_db, mariadb_reads, caplog, capfd
):
    import logging

    from tests.support.messy_rows import sha256
    from tests.support.warehouse import (
        FOUR_BYTE_FIRST_NAME,
        MARIADB_SCALAR_SQL,
        load_orders_mariadb,
        with_four_byte_text,
    )

    pg_engine, schema = postgres
    maria_engine, _ = mariadb
    sandbox = gravity_connection
    orders = with_four_byte_text(messy_orders(1_500, seed=11))
    load_orders_postgres(pg_engine, f"{schema}.orders", orders)
    load_orders_mariadb(maria_engine, "orders", orders)
    caplog.set_level(logging.INFO)

    pg_run, pg_returned = run_dag_test(
        make_dag(
            "gravity_same_pg_vs_mariadb",
            sql=SCALAR_SQL.format(table=f"{schema}.orders"),
            conn_id="warehouse",
            event_name="Purchase",
            max_error_rate=0.05,
        )
    )
    from_postgres = received_by_id(sandbox)
    sandbox.reset()
    capfd.readouterr()
    mariadb_reads["chunks"].clear()
    maria_run, maria_returned = run_dag_test(
        make_dag(
            "gravity_same_mariadb",
            sql=MARIADB_SCALAR_SQL.format(table="orders"),
            conn_id="warehouse_mariadb",
            event_name="Purchase",
            chunk_size=400,
            max_error_rate=0.05,
        )
    )
    from_mariadb = received_by_id(sandbox)

    assert task_states(pg_run)["send"][0] == task_states(maria_run)["send"][0] == "success"
    assert MARIADB_STREAMING_LOG.format(chunk_size=400) in task_log(caplog, capfd)
    assert mariadb_reads["cursors"] == ["MySQLdb.cursors.SSCursor"], "one query, on an unbuffered server-side cursor"
    assert mariadb_reads["chunks"] == [400, 400, 400, 300]
    assert len(from_postgres) > 1_000
    assert from_mariadb == from_postgres
    assert pg_returned["send"]["delivered"] == maria_returned["send"]["delivered"] == len(from_postgres)
    assert_every_row_in_one_bucket(maria_returned["send"], 1_500)
    four_byte = [e for i, e in from_mariadb.items() if int(i) % 37 == 0]
    assert four_byte and all(e["user_data"]["fn"] == sha256("zoë𠮷") for e in four_byte), FOUR_BYTE_FIRST_NAME
    assert all(
        e["user_data"]["em"][0] == sha256(f"ünïcode.{i}🛒@exämple.com")
        for i, e in from_mariadb.items()
        if int(i) % 37 == 0
    )


def test_10000_messy_rows_from_mariadb_arrive_exactly_as_computed_independently(
    mariadb, gravity_connection, airflow_db, mariadb_reads, caplog, capfd
):
    """
    Streamed in 4 chunks through an unbuffered cursor: BIGINT order ids within 600,000 of 2**63 (float64
    would merge neighbours), customer ids near 2**62 beside NULLs, DATETIME times, DECIMAL totals,
    utf8mb4 names and emails, and em as a JSON array (MariaDB has no arrays).
    """
    import logging

    from tests.support.warehouse import load_orders_mariadb, with_four_byte_text

    engine, _ = mariadb
    sandbox = gravity_connection
    orders = with_four_byte_text(messy_orders(10_000))
    id_shift, customer_shift = 2**63 - 1 - 600_000, 2**62
    for order in orders:
        order["order_id"] += id_shift
        no_customer = order["customer_id"] % 17 == 0  # per customer, so duplicates stay exact
        order["customer_id"] = None if no_customer else order["customer_id"] + customer_shift
    assert max(o["order_id"] for o in orders) < 2**63
    load_orders_mariadb(engine, "orders", orders)
    sql = """
        SELECT order_id AS event_id, created_at AS event_time,
               CASE WHEN alt_email IS NULL THEN JSON_ARRAY(email) ELSE JSON_ARRAY(email, alt_email) END AS em,
               phone AS ph, first_name AS fn, last_name AS ln, customer_id AS external_id, country,
               total AS value, currency, CAST(order_id AS CHAR) AS order_id
        FROM orders ORDER BY order_id"""
    dag = make_dag(
        "gravity_mariadb_10k",
        sql=sql,
        conn_id="warehouse_mariadb",
        event_name="Purchase",
        chunk_size=2_500,
        max_error_rate=0.05,
    )
    caplog.set_level(logging.INFO)

    dag_run, returned = run_dag_test(dag)

    assert task_states(dag_run)["send"][0] == "success"
    assert MARIADB_STREAMING_LOG.format(chunk_size=2_500) in task_log(caplog, capfd)
    assert mariadb_reads["cursors"] == ["MySQLdb.cursors.SSCursor"]
    assert mariadb_reads["chunks"] == [2_500] * 4, "memory holds one chunk, never the 10,000-row result"
    summary = returned["send"]
    assert_every_row_in_one_bucket(summary, 10_000)
    first_of_each = {str(o["order_id"]): o for o in reversed(orders)}
    duplicates = len(orders) - len(first_of_each)
    assert duplicates > 0
    assert summary["invalid_reasons"] == {"duplicate_in_run": duplicates}
    assert summary["delivered"] == summary["events_sent"] == len(first_of_each)
    expected = {}
    for event_id, order in first_of_each.items():
        want = expected_event(order, "Purchase")
        if order["customer_id"] is None:
            del want["user_data"]["external_id"]
        expected[event_id] = want
    received = received_by_id(sandbox)
    assert received.keys() == expected.keys()
    for event_id, want in expected.items():
        got = received[event_id]
        assert {k: got.get(k) for k in want} == want, event_id
    stats = sandbox.stats()
    assert stats["plaintext_pii_seen"] == 0
    assert stats["largest_batch"] <= 1_000
    assert stats["redelivered"] == 0
    invalid_emails = sum(
        1 for o in orders for e in (o["email"], o["alt_email"]) if e and e.strip() and expected_email(e) is None
    )
    invalid_phones = sum(1 for o in orders if o["phone"] and expected_phone(o["phone"], o["country"] or "US") is None)
    assert summary["field_drops"]["invalid_email"] == invalid_emails
    assert summary["field_drops"]["invalid_phone"] == invalid_phones
    with_customer = sum(1 for o in first_of_each.values() if o["customer_id"] is not None)
    assert 0 < with_customer < len(first_of_each)
    assert summary["match_key_coverage"]["external_id"] == round(with_customer / len(first_of_each), 4)


def test_big_integer_ids_near_2_63_keep_every_digit_beside_nulls_on_mariadb(mariadb, gravity_connection, airflow_db):
    import time

    engine, _ = mariadb
    top = 2**63 - 1  # the largest BIGINT
    now = int(time.time())
    rows = [
        (top - 4, now - 60, top - 2, top, "a@example.com"),
        (top - 5, now - 60, None, None, "b@example.com"),
        (None, now - 60, top - 4, top - 4, "c@example.com"),
    ]
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE big_ids (event_id BIGINT, event_time BIGINT, external_id BIGINT, order_id BIGINT,"
            " email VARCHAR(100))"
        )
        conn.exec_driver_sql("INSERT INTO big_ids VALUES (%s, %s, %s, %s, %s)", rows)
    dag = make_dag(
        "gravity_big_ids_mariadb",
        sql=BIG_IDS_SQL.format(table="big_ids"),
        conn_id="warehouse_mariadb",
        event_name="Purchase",
        chunk_size=2,
        max_error_rate=0.5,
    )

    dag_run, returned = run_dag_test(dag)

    summary = returned["send"]
    assert (summary["delivered"], summary["invalid_reasons"]) == (2, {"missing_event_id": 1})
    received = received_by_id(gravity_connection)
    assert set(received) == {"9223372036854775803", "9223372036854775802"}
    first = received["9223372036854775803"]
    assert first["user_data"]["external_id"] == ["9223372036854775805"]
    assert first["custom_data"]["order_id"] == "9223372036854775807"
    assert "external_id" not in received["9223372036854775802"]["user_data"]


def test_a_mariadb_run_stopped_in_its_first_chunk_releases_the_streaming_cursor(
    mariadb, gravity_connection, airflow_db
):
    """An unknown column fails the task on the first of 20 chunks: the unread rows of the unbuffered cursor
    must not keep the connection (and its metadata lock on the table) alive after the task."""
    from tests.support.warehouse import load_orders_mariadb

    engine, database = mariadb
    load_orders_mariadb(engine, "orders", messy_orders(20_000, seed=4))
    sql = "SELECT order_id AS event_id, created_at AS event_time, email AS emial FROM orders ORDER BY order_id"
    dag = make_dag(
        "gravity_mariadb_typo", sql=sql, conn_id="warehouse_mariadb", event_name="Purchase", chunk_size=1_000
    )

    dag_run, _ = run_dag_test(dag)

    assert task_states(dag_run)["send"] == ("failed", 1)
    assert gravity_connection.stats()["requests"] == 0
    with engine.connect() as conn:
        others = conn.exec_driver_sql(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
            (database,),
        ).scalar()
        assert others == 0, "the operator left a connection open"
        conn.exec_driver_sql("SET SESSION lock_wait_timeout = 5")
        conn.exec_driver_sql("DROP TABLE orders")
