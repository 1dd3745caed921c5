"""
The match-key guard on nights whose e-mail column was emptied upstream: SendConversionsOperator in real
Airflow (dag.test()), reading the real PostgreSQL, with its run history there, sending to the sandbox.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa

from airflow_provider_gravity.conversions.match_keys import MATCH_KEYS
from airflow_provider_gravity.conversions.run.pipeline import ConversionPipeline
from airflow_provider_gravity.coverage_guard import SAMPLE_ROWS, CoverageFloor, coverage_floors
from airflow_provider_gravity.history.baseline import CoverageBaseline, coverage_baseline
from airflow_provider_gravity.history.queries import HistoryFilter, HistoryReader
from airflow_provider_gravity.history.writer import RunHistory, RunIdentity
from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator
from tests.support.airflow_fixtures import run_dag_test, single_task_dag, task_states
from tests.support.messy_rows import messy_orders
from tests.support.sandbox_server import gravity_connection_json
from tests.support.warehouse import SCALAR_SQL, load_orders_postgres

#: Share of messy orders with a valid e-mail (3 of 5 address shapes, 5 % without one): about 0.57.
USUAL_EMAIL_COVERAGE = 0.57


@pytest.fixture
def gravity_connection(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, max_retries=8, timeout=5))
    return sandbox


def orders_with_emails_emptied(count: int, *, emptied_from: int = 0) -> list[dict]:
    """Messy orders whose e-mail is an empty string from the ``emptied_from``-th order on."""
    orders = messy_orders(count, seed=23)
    for order in orders[emptied_from:]:
        order["email"] = ""
    return orders


def guarded_dag(dag_id: str, schema: str, **guard):
    return single_task_dag(
        dag_id,
        SendConversionsOperator,
        sql=SCALAR_SQL.format(table=f"{schema}.orders"),
        conn_id="warehouse",
        event_name="Purchase",
        chunk_size=2_500,
        max_error_rate=0.05,
        run_history_table=f"{schema}.gravity_run_history",
        retries=2,
        **guard,
    )


def kept_summary(dag_id: str) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        (kept,) = session.query(XComModel).filter_by(dag_id=dag_id, key="gravity_summary").all()
        return kept.value


def view_runs(engine: sa.Engine, schema: str, dag_id: str) -> list[dict]:
    """The runs as the Gravity view's /api/runs lists them."""
    reader = HistoryReader(engine, f"{schema}.gravity_run_history")
    today = dt.datetime.now(dt.UTC).date()
    runs, _ = reader.runs(
        HistoryFilter(today - dt.timedelta(days=30), today + dt.timedelta(days=1), dag_id=dag_id), limit=50, offset=0
    )
    return runs


def seed_successful_runs(engine: sa.Engine, schema: str, dag_id: str, em_coverages: list[float]) -> None:
    history = RunHistory(engine, f"{schema}.gravity_run_history")
    history.ensure_table()
    start = dt.datetime(2026, 11, 1, 3, tzinfo=dt.UTC)
    for night, em in enumerate(em_coverages):
        summary = ConversionPipeline.empty_summary()
        summary.update(rows_read=1_000, delivered=1_000, events_sent=1_000)
        summary["match_key_coverage"] = {**dict.fromkeys(MATCH_KEYS, 0.0), "external_id": 1.0, "em": em}
        interval_start = start + dt.timedelta(days=night)
        identity = RunIdentity(dag_id, "send", -1, f"scheduled__{interval_start:%Y-%m-%d}", 1, interval_start)
        history.record(identity, summary, "success", None)


def test_an_emptied_email_column_is_refused_on_its_first_sample_and_nothing_is_sent(
    postgres, gravity_connection, airflow_db
):
    engine, schema = postgres
    load_orders_postgres(engine, f"{schema}.orders", orders_with_emails_emptied(6_000))
    dag_id = f"gravity_guard_floor_{uuid.uuid4().hex[:6]}"

    dag_run, returned = run_dag_test(guarded_dag(dag_id, schema, min_match_coverage={"em": 0.4, "ph": 0.2}))

    assert task_states(dag_run)["send"] == ("failed", 1), "refused, not retried"
    assert gravity_connection.stats()["requests"] == 0
    guard = kept_summary(dag_id)["match_key_guard"]
    assert guard["key"] == "em" and guard["coverage"] == 0.0 and guard["floor"] == 0.4
    assert guard["stage"] == "sample" and 0 < guard["events"] <= SAMPLE_ROWS
    assert guard["rule"] == "min_match_coverage"
    (run,) = view_runs(engine, schema, dag_id)
    assert run["outcome"] == "refused"
    assert "Match key 'em' covers 0.00% of events in a first sample" in run["failure"]
    assert "under its floor of 40.00% (min_match_coverage)" in run["failure"]
    assert run["delivered"] == 0 and run["rows_read"] == 0


def test_a_collapse_after_the_first_sample_is_refused_from_the_summary_against_the_median_of_7_runs(
    postgres, gravity_connection, airflow_db
):
    engine, schema = postgres
    dag_id = f"gravity_guard_drop_{uuid.uuid4().hex[:6]}"
    # Eight nights: the newest seven make the median (0.56); the oldest, far lower, is not one of them.
    seed_successful_runs(engine, schema, dag_id, [0.05, 0.55, 0.58, 0.56, 0.57, 0.54, 0.59, 0.56])
    # The first 10,000 rows look as usual, so the sample passes; the 20,000 after them lost their e-mails.
    orders = orders_with_emails_emptied(30_000, emptied_from=SAMPLE_ROWS)
    load_orders_postgres(engine, f"{schema}.orders", orders)

    dag_run, returned = run_dag_test(guarded_dag(dag_id, schema, max_coverage_drop=0.5))

    assert task_states(dag_run)["send"] == ("failed", 1), "refused, not retried"
    summary = kept_summary(dag_id)
    guard = summary["match_key_guard"]
    assert guard["key"] == "em" and guard["stage"] == "summary"
    assert guard["coverage"] == summary["match_key_coverage"]["em"] < 0.25
    assert guard["floor"] == pytest.approx(0.5 * 0.56)
    assert guard["rule"] == "max_coverage_drop 0.5 of its median 56.00% over the last 7 successful runs"
    assert summary["delivered"] == len(gravity_connection.events()), "the run went to its end"
    (run,) = [run for run in view_runs(engine, schema, dag_id) if run["outcome"] != "success"]
    assert run["outcome"] == "refused"
    assert "Match key 'em' covers" in run["failure"] and "over the" in run["failure"]
    assert "under its floor of 28.00% (max_coverage_drop 0.5 of its median 56.00%" in run["failure"]


def test_a_usual_night_passes_both_guards_and_becomes_part_of_the_median(postgres, gravity_connection, airflow_db):
    engine, schema = postgres
    dag_id = f"gravity_guard_pass_{uuid.uuid4().hex[:6]}"
    seed_successful_runs(engine, schema, dag_id, [0.55, 0.58, 0.56])
    load_orders_postgres(engine, f"{schema}.orders", orders_with_emails_emptied(4_000, emptied_from=4_000))

    dag_run, returned = run_dag_test(guarded_dag(dag_id, schema, min_match_coverage={"em": 0.4}, max_coverage_drop=0.5))

    assert task_states(dag_run)["send"] == ("success", 1)
    summary = returned["send"]
    assert "match_key_guard" not in summary
    assert summary["match_key_coverage"]["em"] == pytest.approx(USUAL_EMAIL_COVERAGE, abs=0.05)
    baseline = coverage_baseline(
        engine, f"{schema}.gravity_run_history", dag_id=dag_id, task_id="send", map_index=-1, before_run_id="next"
    )
    assert baseline.runs == 4


def test_max_coverage_drop_without_a_run_history_is_refused_before_anything_is_read(
    postgres, gravity_connection, airflow_db
):
    engine, schema = postgres
    dag = single_task_dag(
        f"gravity_guard_no_history_{uuid.uuid4().hex[:6]}",
        SendConversionsOperator,
        sql="SELECT 1/0 AS event_id",
        conn_id="warehouse",
        event_name="Purchase",
        max_coverage_drop=0.5,
        retries=2,
    )

    dag_run, _ = run_dag_test(dag)

    assert task_states(dag_run)["send"] == ("failed", 1)
    assert gravity_connection.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("guard", "message"),
    [
        ({"min_match_coverage": {"email": 0.5}}, "unknown match key 'email'"),
        ({"min_match_coverage": {"em": 50}}, "share between 0 and 1"),
        ({"max_coverage_drop": 0}, "above 0 and at most 1"),
    ],
)
def test_guard_arguments_are_checked_when_the_dag_is_parsed(guard, message):
    with pytest.raises(ValueError, match=message):
        SendConversionsOperator(task_id="send", sql="SELECT 1", conn_id="warehouse", **guard)


def test_the_higher_floor_wins_and_a_short_history_checks_the_fixed_floor_only():
    baseline = CoverageBaseline({**dict.fromkeys(MATCH_KEYS, 0.0), "em": 0.9, "ph": 0.2}, runs=7)
    floors = coverage_floors({"em": 0.3, "ph": 0.3}, 0.5, baseline)
    assert [(f.key, f.floor) for f in floors] == [("em", 0.45), ("ph", 0.3)]
    assert coverage_floors({"em": 0.3}, 0.5, CoverageBaseline(baseline.medians, runs=2)) == [
        CoverageFloor("em", 0.3, "min_match_coverage")
    ]
