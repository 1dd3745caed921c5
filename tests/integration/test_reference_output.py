"""
Issue 10, identical output: what the columnar path sends equals, byte for byte after JSON canonicalization, what a
straightforward per-row reference (:mod:`tests.support.messy_rows`, phonenumbers and hashlib per row, no provider
code) computes; both read paths of PostgreSQL (Arrow batches through ADBC, and the server-side cursor that a query
with DB-API parameters takes) are checked over every row of a seeded messy table.

The seed is random on each run and printed; ``GRAVITY_REFERENCE_SEED=<seed>`` replays a run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time

import pytest
import sqlalchemy as sa

from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator
from tests.support.airflow_fixtures import run_dag_test, single_task_dag, task_states
from tests.support.messy_rows import EXTRA_COLUMNS, messy_extras, messy_orders, query_rows, reference_run
from tests.support.sandbox_server import gravity_connection_json
from tests.support.warehouse import load_orders_postgres

ROWS = 3_000
CUSTOMERS = 800
EVENT_NAME = "Purchase"
SEED = int(os.environ.get("GRAVITY_REFERENCE_SEED") or random.SystemRandom().randrange(2**32))
#: Differences shown in a failure message, of all found.
SHOWN_DIFFERENCES = 3

SELECTED_COLUMNS = """
    CASE WHEN x.drop_event_id THEN NULL ELSE o.order_id END AS event_id,
    COALESCE(x.event_time_override, o.created_at) AS event_time,
    x.event_name, x.action_source, x.event_source_url,
    {em} AS em, o.phone AS ph, o.first_name AS fn, o.last_name AS ln, o.customer_id AS external_id, o.country,
    x.click_id, x.visitor_id, x.pixel_user_data{json_cast} AS user_data, x.client_context{json_cast} AS client_context,
    o.total AS value, COALESCE(x.currency_override, o.currency) AS currency, o.order_id::text AS order_id,
    x.contents{json_cast} AS contents, x.custom_store_id, x.custom_channel"""
#: Scalar columns only (JSON as its text, one email), so that the ADBC reader takes every column.
ARROW_SQL = (
    "SELECT"
    + SELECTED_COLUMNS.format(em="o.email", json_cast="::text")
    + "\nFROM {schema}.orders o JOIN {schema}.extras x USING (order_id) ORDER BY o.order_id"
)
#: Native JSONB and a text array of emails, and a DB-API parameter: the server-side cursor path.
CURSOR_SQL = (
    "SELECT"
    + SELECTED_COLUMNS.format(
        em="CASE WHEN o.alt_email IS NULL THEN ARRAY[o.email] ELSE ARRAY[o.email, o.alt_email] END", json_cast=""
    )
    + "\nFROM {schema}.orders o JOIN {schema}.extras x USING (order_id)"
    + "\nWHERE o.order_id >= %(first_order_id)s ORDER BY o.order_id"
)


def canonical(event: object) -> str:
    """An event as canonical JSON text: the form both sides are compared in."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"))


@pytest.fixture
def gravity_connection(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, max_retries=8, timeout=5))
    return sandbox


@pytest.fixture
def seeded_warehouse(postgres):
    """
    ``orders`` (:func:`messy_orders`) and ``extras`` (:func:`messy_extras`: pixel data, JSON columns, custom
    fields, planted defects) in the scratch schema. Returns the schema, the orders and the extras.
    """
    engine, schema = postgres
    print(f"reference output seed: GRAVITY_REFERENCE_SEED={SEED}")
    orders = messy_orders(ROWS, seed=SEED, customers=CUSTOMERS)
    extras = messy_extras(orders, random.Random(SEED))
    load_orders_postgres(engine, f"{schema}.orders", orders)
    json_columns = [name for name, kind in EXTRA_COLUMNS.items() if kind == "JSONB"]
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {schema}.extras ({', '.join(f'{n} {k}' for n, k in EXTRA_COLUMNS.items())})"
        )
        placeholders = ", ".join(f"%({name})s" for name in EXTRA_COLUMNS)
        conn.exec_driver_sql(
            f"INSERT INTO {schema}.extras ({', '.join(EXTRA_COLUMNS)}) VALUES ({placeholders})",
            [
                {k: json.dumps(v) if k in json_columns and v is not None else v for k, v in extra.items()}
                for extra in extras
            ],
        )
    return schema, orders, extras


def run_operator(dag_id: str, **operator_kwargs) -> tuple[dict, float]:
    """Run the operator in ``dag.test()``; return its summary and the time the run started (Unix seconds)."""
    started = time.time()
    dag = single_task_dag(
        dag_id,
        SendConversionsOperator,
        conn_id="warehouse",
        event_name=EVENT_NAME,
        max_error_rate=0.2,
        **operator_kwargs,
    )
    dag_run, returned = run_dag_test(dag)
    assert task_states(dag_run)["send"][0] == "success", f"seed {SEED}"
    return returned["send"], started


def received_by_id(sandbox) -> dict[str, dict]:
    events = sandbox.events()
    assert len(events) == len({event["event_id"] for event in events}), "an event arrived twice"
    return {event["event_id"]: event for event in events}


def differing_paths(reference: object, provider: object, path: str = "") -> list[str]:
    """The paths (``custom_data.channel``, ``user_data.em[0]``) at which two JSON values differ."""
    if isinstance(reference, dict) and isinstance(provider, dict):
        return [
            difference
            for key in sorted(reference.keys() | provider.keys())
            for difference in differing_paths(reference.get(key), provider.get(key), f"{path}.{key}".lstrip("."))
        ]
    if isinstance(reference, list) and isinstance(provider, list) and len(reference) == len(provider):
        return [
            difference
            for index, (mine, theirs) in enumerate(zip(reference, provider, strict=True))
            for difference in differing_paths(mine, theirs, f"{path}[{index}]")
        ]
    return [] if canonical(reference) == canonical(provider) else [path]


def assert_identical_events(expected: dict[str, dict], received: dict[str, dict], path: str) -> None:
    """
    Every expected event arrived, nothing else did, and each arrived as the exact canonical text the reference
    gives. A failure names the seed and shows the first differing events whole, reference then provider.
    """
    assert received.keys() == expected.keys(), (
        f"[{path}, seed {SEED}] sent but not expected: {sorted(received.keys() - expected.keys())[:10]}; "
        f"expected but not sent: {sorted(expected.keys() - received.keys())[:10]}"
    )
    differing = [
        event_id
        for event_id in sorted(expected, key=int)
        if canonical(expected[event_id]) != canonical(received[event_id])
    ]
    paths: dict[str, int] = {}
    for event_id in differing:
        for path_differing in differing_paths(expected[event_id], received[event_id]):
            paths[path_differing] = paths.get(path_differing, 0) + 1
    shown = "\n".join(
        f"event_id {event_id}:\n  reference: {canonical(expected[event_id])}"
        f"\n  provider:  {canonical(received[event_id])}"
        for event_id in differing[:SHOWN_DIFFERENCES]
    )
    # PROVIDER/REFERENCE DIFFERENCE: a failure here is an event the provider sends differently from the README's
    # rules as the per-row reference reads them. Open when this test was written: custom_<key> text is sent
    # untrimmed ("  in store "), where the README ("How cells are read") trims the text of every column.
    assert not differing, (
        f"[{path}, seed {SEED}] {len(differing)} of {len(expected)} events differ, at {paths}:\n{shown}"
    )


def reasons_counted(refused: list[tuple[int, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, reason in refused:
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def test_arrow_batches_send_exactly_the_reference_events(seeded_warehouse, gravity_connection, airflow_db, caplog):
    schema, orders, extras = seeded_warehouse
    rows = query_rows(sorted(orders, key=lambda order: order["order_id"]), extras, email_list=False)
    caplog.set_level(logging.INFO)

    summary, started = run_operator("gravity_reference_arrow", sql=ARROW_SQL.format(schema=schema))

    assert "as Arrow batches" in caplog.text, "the default arguments on PostgreSQL read through ADBC"
    expected, refused = reference_run(rows, event_name=EVENT_NAME, now=started)
    assert len(expected) > ROWS * 0.8 and {reason for _, reason in refused} >= {"duplicate_in_run"}, f"seed {SEED}"
    assert summary["rows_read"] == ROWS
    assert summary["invalid_reasons"] == reasons_counted(refused), f"seed {SEED}"
    assert summary["delivered"] == len(expected)
    assert gravity_connection.stats()["plaintext_pii_seen"] == 0
    assert_identical_events(expected, received_by_id(gravity_connection), "Arrow batches")


def test_the_server_side_cursor_sends_exactly_the_reference_events_and_refuses_its_rows(
    seeded_warehouse, gravity_connection, airflow_db, postgres, caplog
):
    engine, _ = postgres
    schema, orders, extras = seeded_warehouse
    rows = query_rows(sorted(orders, key=lambda order: order["order_id"]), extras, email_list=True)
    caplog.set_level(logging.INFO)

    summary, started = run_operator(
        "gravity_reference_cursor",
        sql=CURSOR_SQL.format(schema=schema),
        parameters={"first_order_id": min(order["order_id"] for order in orders)},
        delivery_log_table=f"{schema}.delivery_log",
    )

    assert "with a server-side cursor" in caplog.text and "as Arrow batches" not in caplog.text
    expected, refused = reference_run(rows, event_name=EVENT_NAME, now=started)
    assert summary["rows_read"] == ROWS
    assert summary["invalid_reasons"] == reasons_counted(refused), f"seed {SEED}"
    assert summary["delivered"] == len(expected)
    # Each refused row that has a key of its own is a dead letter carrying the reference's reason.
    expected_dead_letters = {}
    for index, reason in refused:
        event_id = rows[index]["event_id"]
        if reason != "duplicate_in_run" and event_id is not None:
            name = (rows[index]["event_name"] or "").strip() or EVENT_NAME
            expected_dead_letters[(name, str(event_id))] = reason
    assert expected_dead_letters, f"seed {SEED} planted no defect with an event id"
    with engine.connect() as conn:
        logged = conn.execute(
            sa.text(f"SELECT event_name, event_id, detail FROM {schema}.delivery_log WHERE status = 'invalid'")
        ).all()
    assert {(name, event_id): detail for name, event_id, detail in logged} == expected_dead_letters, f"seed {SEED}"
    assert_identical_events(expected, received_by_id(gravity_connection), "server-side cursor")
