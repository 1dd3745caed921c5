"""
The asset a delivery updates, ``gravity://<host>/conversions/<event_name>``: registered in the provider info's
``asset-uris`` (normalized by its handler), the same name as the OpenLineage output, and an asset event only
for a run that delivered something new.

Two levels: ``dag.test()`` runs of one task on the real PostgreSQL, sending to the sandbox, whose asset events
are read from Airflow's metadata database; and the nightly DAG with a downstream DAG scheduled on its asset,
under a real scheduler (api-server, scheduler and dag-processor processes): a night that delivers gives the
downstream DAG a run, a second run of the same window, which delivers nothing new, gives it none.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_provider_gravity.assets import (
    conversions_asset,
    convert_asset_to_openlineage,
    create_asset,
    sanitize_uri,
)
from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator
from demo.sample_data import SampleConfig, generate
from tests.integration.test_backfill import seed_warehouse
from tests.support.airflow_fixtures import run_dag_test, single_task_dag, task_states
from tests.support.airflow_processes import AirflowProcesses
from tests.support.databases import POSTGRES_URL, airflow_uri, require_server
from tests.support.messy_rows import messy_orders
from tests.support.sandbox_server import SandboxServer, gravity_connection_json
from tests.support.warehouse import SCALAR_SQL, load_orders_postgres

REPO_DAGS = Path(__file__).resolve().parents[2] / "dags"
NIGHTLY = "gravity_offline_conversions"
DOWNSTREAM = "gravity_attribution_report"
TASKS = ("send_crm_conversions", "send_store_purchases")


def asset_events(uri: str, dag_id: str) -> list[dict]:
    """The asset events of ``uri`` that ``dag_id`` emitted, in the test session's metadata database, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .filter(AssetModel.uri == uri, AssetEvent.source_dag_id == dag_id)
            .order_by(AssetEvent.id)
            .all()
        )
        return [
            {
                "extra": row.extra,
                "dag_id": row.source_dag_id,
                "run_id": row.source_run_id,
                "map_index": row.source_map_index,
            }
            for row in rows
        ]


def test_the_provider_registers_the_gravity_scheme_and_its_handler_normalizes_uris():
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk import Asset

    manager = ProvidersManager()
    assert manager.asset_uri_handlers["gravity"] is sanitize_uri
    assert manager.asset_to_openlineage_converters["gravity"] is convert_asset_to_openlineage
    assert manager.asset_factories["gravity"] is create_asset

    written = Asset("gravity://user@API.TryGravity.ai:443/conversions/Purchase/")
    assert written.uri == "gravity://api.trygravity.ai/conversions/Purchase"
    assert Asset("gravity://127.0.0.1:8123/conversions/Lead").uri == "gravity://127.0.0.1:8123/conversions/Lead"
    for wrong in ("gravity:///conversions/Purchase", "gravity://host/leads/Purchase", "gravity://host/conversions"):
        with pytest.raises(ValueError, match="gravity://"):
            Asset(wrong)
    # The factory names the asset by its normalized URI: what a downstream DAG writes.
    made = create_asset(host="API.trygravity.ai:443", event_name="Add To Cart")
    assert made.name == made.uri == "gravity://api.trygravity.ai/conversions/Add%20To%20Cart"
    lineage = convert_asset_to_openlineage(made)
    assert (lineage.namespace, lineage.name) == ("gravity://api.trygravity.ai", "conversions/Add To Cart")


def test_the_asset_is_the_openlineage_output_and_the_task_declares_its_alias(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_GRAVITY_PROD", json.dumps({"conn_type": "gravity", "host": "https://Gravity.example.com:8443/"})
    )
    operator = SendConversionsOperator(
        task_id="send", sql="SELECT 1", conn_id="nowhere", gravity_conn_id="gravity_prod", event_name="Purchase"
    )

    asset = conversions_asset("gravity_prod", "Purchase")
    assert asset.uri == "gravity://gravity.example.com:8443/conversions/Purchase"
    (output,) = operator.get_openlineage_facets_on_complete(None).outputs
    assert (output.namespace, output.name) == ("gravity://gravity.example.com:8443", "conversions/Purchase")
    assert operator.outlets == [operator.asset_alias]
    # Without a connection, lineage and the asset name Gravity's own host.
    assert conversions_asset("no_such_connection", None).uri == "gravity://api.trygravity.ai/conversions/events"


@pytest.fixture
def gravity_connection(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, max_retries=8, timeout=5))
    return sandbox


def test_only_a_run_that_delivers_something_new_emits_an_asset_event(postgres, gravity_connection, airflow_db):
    engine, schema = postgres
    load_orders_postgres(engine, f"{schema}.orders", messy_orders(300, seed=41))
    dag_id = f"gravity_assets_{uuid.uuid4().hex[:6]}"
    uri = f"gravity://{gravity_connection.url.split('://')[1]}/conversions/Purchase"

    def run(**overrides):
        dag = single_task_dag(
            dag_id,
            SendConversionsOperator,
            sql=SCALAR_SQL.format(table=f"{schema}.orders"),
            conn_id="warehouse",
            event_name="Purchase",
            max_error_rate=0.2,
            delivery_log_table=f"{schema}.gravity_delivery_log",
            **overrides,
        )
        dag_run, returned = run_dag_test(dag)
        assert task_states(dag_run)["send"] == ("success", 1)
        return dag_run, returned["send"]

    dry_run, dry_summary = run(dry_run=True)
    assert dry_summary["delivered"] == 0 and gravity_connection.stats()["requests"] == 0
    assert asset_events(uri, dag_id) == [], "a dry run delivers nothing and emits no asset event"

    first_run, first = run()
    assert first["delivered"] > 200
    (event,) = asset_events(uri, dag_id)
    assert (event["dag_id"], event["run_id"]) == (dag_id, first_run.run_id)
    assert event["extra"] == {key: first[key] for key in event["extra"]}
    assert event["extra"]["delivered"] == first["delivered"] == len(gravity_connection.events())

    _, second = run()
    assert second["delivered"] == 0 and second["skipped_delivered"] == first["delivered"]
    assert len(asset_events(uri, dag_id)) == 1, "a run that delivered nothing new emitted an asset event"


def test_a_mapped_shard_that_delivers_emits_an_event_and_one_that_delivers_nothing_emits_none(
    postgres, gravity_connection, airflow_db
):
    from airflow.sdk import DAG

    engine, schema = postgres
    load_orders_postgres(engine, f"{schema}.orders", messy_orders(200, seed=43))
    dag_id = f"gravity_assets_mapped_{uuid.uuid4().hex[:6]}"
    uri = f"gravity://{gravity_connection.url.split('://')[1]}/conversions/Purchase"
    # Shard 1 of 2 selects nothing: only shard 0 delivers.
    sql = SCALAR_SQL.format(table=f"{schema}.orders").replace(
        "ORDER BY", "WHERE mod(order_id, 2) = 0 AND {{ params.shard }} = 0 ORDER BY"
    )
    with DAG(dag_id, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:
        SendConversionsOperator.partial(
            task_id="send", sql=sql, conn_id="warehouse", event_name="Purchase", max_error_rate=0.2
        ).expand(params=[{"shard": 0}, {"shard": 1}])

    dag_run, _ = run_dag_test(dag)

    assert {ti.map_index: str(ti.state) for ti in dag_run.get_task_instances()} == {0: "success", 1: "success"}
    (event,) = asset_events(uri, dag_id)
    assert (event["run_id"], event["map_index"]) == (dag_run.run_id, 0)
    assert event["extra"]["delivered"] == len(gravity_connection.events()) > 50


# -- under a real scheduler -------------------------------------------------------------------------------------

#: Three days of rows that end where the scheduler's latest complete interval does (today 00:00 UTC): the first
#: scheduled night reads them all, its own day and, with the DAG's default lookback of 2 days, the two before.
NIGHT_DAYS = 3
SAMPLE_ROWS_PER_DAY = 40
RUNS_TIMEOUT = 120.0

DOWNSTREAM_DAG = '''\
"""Scheduled on the nightly DAG's store purchases, as the README's example: returns what triggered it."""
import datetime

from airflow.sdk import DAG, Asset, task

PURCHASES = Asset({uri!r})

with DAG({dag_id!r}, schedule=[PURCHASES], start_date=datetime.datetime(2024, 1, 1), catchup=False):

    @task
    def refresh_attribution_report(triggering_asset_events=None):
        # Also keyed by the alias the event came through: read the asset's own entry.
        return [[event.source_run_id, event.extra["delivered"]] for event in triggering_asset_events[PURCHASES]]

    refresh_attribution_report()
'''


@pytest.fixture
def recent_warehouse_uri() -> Iterator[str]:
    """A scratch PostgreSQL database with the sample tables' rows of the last three days; its connection URI."""
    server = require_server(POSTGRES_URL)
    database = f"gravity_assets_{uuid.uuid4().hex[:8]}"
    with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {database}")
    url = sa.make_url(POSTGRES_URL).set(database=database)
    warehouse = sa.create_engine(url)
    today = dt.datetime.now(dt.UTC).date()
    sample = SampleConfig(
        days=NIGHT_DAYS,
        crm_rows_per_day=SAMPLE_ROWS_PER_DAY,
        store_rows_per_day=SAMPLE_ROWS_PER_DAY,
        start=today - dt.timedelta(days=NIGHT_DAYS),
        seed=29,
    )
    try:
        seed_warehouse(warehouse, generate(sample))
        yield airflow_uri(url.render_as_string(hide_password=False))
    finally:
        warehouse.dispose()
        with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        server.dispose()


def dags_folder(root: Path, purchases_uri: str) -> Path:
    """The nightly DAG (its file and helpers, linked from the repository) and the downstream DAG."""
    folder = root / "dags"
    folder.mkdir()
    for name in ("gravity_offline_conversions.py", "gravity_dag_defaults.py", "gravity_window.py", "sql"):
        (folder / name).symlink_to(REPO_DAGS / name)
    (folder / f"{DOWNSTREAM}.py").write_text(DOWNSTREAM_DAG.format(dag_id=DOWNSTREAM, uri=purchases_uri))
    return folder


def dag_runs(airflow: AirflowProcesses, dag_id: str) -> list[dict]:
    return [
        dict(row)
        for row in airflow.query(
            "SELECT id, run_id, run_type, state, data_interval_start, data_interval_end FROM dag_run "
            "WHERE dag_id = %s ORDER BY id",
            (dag_id,),
        )
    ]


def events_of(airflow: AirflowProcesses, uri: str) -> list[dict]:
    return [
        dict(row)
        for row in airflow.query(
            "SELECT e.id, e.source_run_id, e.source_task_id, e.extra FROM asset_event e JOIN asset a "
            "ON a.id = e.asset_id WHERE a.uri = %s ORDER BY e.id",
            (uri,),
        )
    ]


def finished_run(airflow: AirflowProcesses, dag_id: str, run_type: str) -> dict:
    """Wait for the run of ``run_type`` to finish; fail at once when a task of it fails."""

    def done() -> dict | None:
        for run in dag_runs(airflow, dag_id):
            if run["run_type"] != run_type:
                continue
            if run["state"] == "failed":
                raise AssertionError(f"{dag_id} {run['run_id']} failed\n{airflow.diagnostics()}")
            if run["state"] == "success":
                return run
        return None

    return airflow.wait_until(done, RUNS_TIMEOUT, f"a {run_type} run of {dag_id} to succeed")


@pytest.mark.slow
def test_a_downstream_dag_runs_after_a_night_that_delivers_and_not_after_a_rerun_that_delivers_nothing_new(
    tmp_path: Path, recent_warehouse_uri: str
) -> None:
    with SandboxServer() as sandbox:
        host = sandbox.url.split("://")[1]
        purchases = f"gravity://{host}/conversions/Purchase"
        leads = f"gravity://{host}/conversions/Lead"
        home = tmp_path / "airflow-home"
        home.mkdir()
        env = {
            "AIRFLOW_CONN_GRAVITY_DEFAULT": json.dumps(
                {"conn_type": "gravity", "host": sandbox.url, "password": sandbox.api_key}
            ),
            "AIRFLOW_CONN_GRAVITY_WAREHOUSE": recent_warehouse_uri,
            "GRAVITY_DAG_SCHEDULE": "0 0 * * *",  # calendar days: the latest complete interval ends today 00:00
            "GRAVITY_DAG_TIMEZONE": "UTC",
            "GRAVITY_DAG_START_DATE": (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=7)).isoformat(),
            "GRAVITY_DAG_RETRIES": "0",
            # Unpaused when parsed: the nightly DAG's latest interval is scheduled at once (catchup off).
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        }
        with AirflowProcesses(home, dags_folder(tmp_path, purchases), env) as airflow:
            airflow.wait_for_dag(DOWNSTREAM)
            airflow.wait_for_dag(NIGHTLY)

            night = finished_run(airflow, NIGHTLY, "scheduled")
            summaries = airflow.return_values(NIGHTLY, [night["run_id"]])
            store = summaries[(night["run_id"], "send_store_purchases")]
            crm = summaries[(night["run_id"], "send_crm_conversions")]
            assert store["delivered"] > 0 and crm["delivered"] > 0
            (purchase_event,) = events_of(airflow, purchases)
            assert purchase_event["source_run_id"] == night["run_id"]
            assert purchase_event["extra"]["delivered"] == store["delivered"]
            assert [event["source_run_id"] for event in events_of(airflow, leads)] == [night["run_id"]]

            downstream = finished_run(airflow, DOWNSTREAM, "asset_triggered")
            consumed = airflow.query(
                "SELECT event_id FROM dagrun_asset_event WHERE dag_run_id = %s", (downstream["id"],)
            )
            assert [row["event_id"] for row in consumed] == [purchase_event["id"]]
            seen = airflow.return_values(DOWNSTREAM, [downstream["run_id"]])
            assert seen[(downstream["run_id"], "refresh_attribution_report")] == [[night["run_id"], store["delivered"]]]

            # The same window again: everything is in the delivery log, nothing new is delivered. A manual run
            # sends the last complete interval before its logical date; the scheduled run holds the interval's end.
            rerun_date = night["data_interval_end"] + dt.timedelta(minutes=1)
            airflow.cli("dags", "trigger", NIGHTLY, "--logical-date", rerun_date.isoformat(), "--conf", "{}")
            rerun = finished_run(airflow, NIGHTLY, "manual")
            assert (rerun["data_interval_start"], rerun["data_interval_end"]) == (
                night["data_interval_start"],
                night["data_interval_end"],
            )
            again = airflow.return_values(NIGHTLY, [rerun["run_id"]])
            for task_id, first in ((TASKS[0], crm), (TASKS[1], store)):
                summary = again[(rerun["run_id"], task_id)]
                assert summary["delivered"] == 0, task_id
                assert summary["skipped_delivered"] == first["delivered"], task_id
            assert len(events_of(airflow, purchases)) == 1 and len(events_of(airflow, leads)) == 1

            time.sleep(5)  # several scheduler loops: time for a downstream run, had there been an event
            assert [run["run_type"] for run in dag_runs(airflow, DOWNSTREAM)] == ["asset_triggered"]
            assert airflow.query("SELECT * FROM asset_dag_run_queue") == []
