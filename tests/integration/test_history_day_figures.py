"""A day's figures in the Gravity view are what Gravity accepted that day, also when a retry could not resume
and skipped what its first try had delivered; and the per-day rollup the view reads gives the same figures as the
history rows they come from, on PostgreSQL, MariaDB and SQLite, also for a history of an earlier version that a
writer migrates while others write."""

from __future__ import annotations

import datetime as dt
import random
import threading

import pytest
import requests
import sqlalchemy as sa

from airflow_provider_gravity.conversions.run.delivery_log import DeliveryLog, DeliveryRecord
from airflow_provider_gravity.history.queries import HistoryFilter, HistoryReader
from airflow_provider_gravity.history.writer import RunHistory, RunIdentity, history_row
from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator
from airflow_provider_gravity.storage.run_history_tables import (
    BUCKET_COLUMNS,
    COUNT_COLUMNS,
    rollup_table_names,
    run_history_table,
)
from tests.support.airflow_fixtures import run_dag_test, single_task_dag, task_states
from tests.support.messy_rows import messy_orders
from tests.support.sandbox_server import gravity_connection_json
from tests.support.warehouse import SCALAR_SQL, load_orders_postgres

EVENTS = 5_000
EARLIER = 500  # delivered by an earlier run: skipped by both tries, never sent


class HealedOnRetry(SendConversionsOperator):
    """The operator, with the sandbox's outage over before the retry."""

    def __init__(self, *, sandbox_url: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sandbox_url = sandbox_url

    def execute(self, context):
        if context["ti"].try_number > 1:
            requests.post(f"{self.sandbox_url}/sandbox/faults", json={"faults": [], "replace": True}, timeout=5)
        return super().execute(context)


def test_a_retry_that_cannot_resume_shows_the_day_as_gravity_accepted_it(postgres, sandbox, airflow_db, monkeypatch):
    engine, schema = postgres
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(sandbox, max_retries=1, timeout=5))
    orders = messy_orders(EVENTS, seed=31)
    for number, order in enumerate(orders):
        order["order_id"] = 800_000 + number
    load_orders_postgres(engine, f"{schema}.orders", orders)
    log_table, history_table = f"{schema}.delivery_log", f"{schema}.run_history"
    earlier = DeliveryLog(engine, log_table, dag_id="gravity_day_figures", task_id="send")
    earlier.ensure_table()
    earlier_ids = [str(800_000 + number) for number in range(0, EVENTS, EVENTS // EARLIER)]  # in every chunk
    earlier.record(
        [DeliveryRecord("Purchase", event_id, "delivered", "ok", None) for event_id in earlier_ids],
        run_id="scheduled__earlier",
    )
    sandbox.faults({"kind": "status", "status": 503, "count": 100_000, "after": 4})
    dag = single_task_dag(
        "gravity_day_figures",
        HealedOnRetry,
        sandbox_url=sandbox.url,
        sql=SCALAR_SQL.format(table=f"{schema}.orders"),
        conn_id="warehouse",
        event_name="Purchase",
        chunk_size=1_000,
        batch_size=500,
        max_concurrency=2,
        max_error_rate=0.05,
        delivery_log_table=log_table,
        run_history_table=history_table,
        durable=False,  # as on Airflow 3.1/3.2, or with a state store that failed: the retry cannot resume
        retries=1,
        retry_exponential_backoff=False,
    )

    dag_run, returned = run_dag_test(dag)

    assert task_states(dag_run)["send"] == ("success", 2)
    accepted = sandbox.stats()["unique_events"]
    assert accepted == EVENTS - EARLIER
    with engine.connect() as connection:
        rows = connection.execute(sa.text(f"SELECT * FROM {history_table} ORDER BY id")).mappings().all()
    first, last = rows
    assert 0 < first["delivered"] < accepted and first["outcome"] == "incomplete"
    # What the retry's own summary says: the first try's deliveries are skipped, as if another run's.
    assert last["delivered"] == accepted - first["delivered"] == returned["send"]["delivered"]
    assert last["skipped_delivered"] == EARLIER + first["delivered"]
    day = rows[-1]["day"]

    reader = HistoryReader(engine, history_table)
    (figures,) = reader.daily(HistoryFilter(day, day, dag_id="gravity_day_figures"))
    assert figures["delivered"] == accepted, "the day shows what Gravity accepted"
    assert figures["skipped_delivered"] == EARLIER, "skipped: what an earlier run delivered, only"
    assert figures["runs"] == 1 and figures["rows_read"] == EVENTS
    assert sum(figures[name] for name in BUCKET_COLUMNS) == figures["rows_read"]
    with engine.connect() as connection:
        assert reader._rollup_ready(connection)  # read from the rollup the writer keeps
    assert without_rollup(engine, history_table).daily(HistoryFilter(day, day, dag_id="gravity_day_figures")) == [
        figures
    ]


# -- the rollup against the history rows ------------------------------------------------------------------


@pytest.fixture(params=["postgres", "mariadb", "sqlite"])
def history_database(request, tmp_path):
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


REASONS = ("bad_currency", "bad_value", "missing_event_id")
MESSAGES = ("error: invalid event_time", "error: " + "a long message of Gravity " * 20)


def random_tries(rng: random.Random, instances: int, first_day: dt.date) -> list[tuple[RunIdentity, dict, str]]:
    """Tries of ``instances`` task instances over a few days: retries that resumed, that did not, mapped ones."""
    tries = []
    for number in range(instances):
        day = first_day + dt.timedelta(days=rng.randrange(4))
        start = dt.datetime.combine(day, dt.time(3), tzinfo=dt.UTC)
        dag_id, task_id = rng.choice(("dag_a", "dag_b")), rng.choice(("send", "push"))
        map_index = number  # one task instance each
        rows = rng.randint(50, 400)
        delivered_before = 0
        skipped_by_others = rng.randint(0, 20)
        invalid = {reason: rng.randint(0, 5) for reason in rng.sample(REASONS, 2)}  # the same rows each try
        rejected = {MESSAGES[rng.randrange(2)]: rng.randint(0, 3)}
        for try_number in range(1, rng.choice((1, 1, 2, 3)) + 1):
            bad = sum(invalid.values()) + sum(rejected.values())
            left = rows - bad - skipped_by_others - delivered_before
            fresh = left if rng.random() < 0.5 else rng.randint(0, left)
            summary = {
                "rows_read": rows,
                "delivered": fresh,
                "duplicate": 0,
                "rejected": sum(rejected.values()),
                "invalid": sum(invalid.values()),
                "skipped_delivered": skipped_by_others + delivered_before,
                "undelivered": left - fresh,
                "invalid_reasons": invalid,
                "rejected_errors": rejected,
                "events_sent": fresh + sum(rejected.values()),
                "match_key_coverage": {"em": round(rng.random(), 4), "ph": round(rng.random(), 4)},
            }
            identity = RunIdentity(dag_id, task_id, map_index, f"scheduled__{start.isoformat()}", try_number, start)
            tries.append((identity, summary, "success" if fresh == left else "incomplete"))
            delivered_before += fresh  # the next try cannot resume: it skips these
    return tries


def expected_days(tries: list[tuple[RunIdentity, dict, str]]) -> dict[str, dict[str, int]]:
    """Per day, from the tries as the test made them: what was delivered, what others had delivered."""
    instances: dict[tuple, list[dict]] = {}
    for identity, summary, _ in tries:
        key = (identity.dag_id, identity.task_id, identity.run_id, identity.map_index)
        instances.setdefault(key, []).append({**summary, "day": identity.data_interval_start.date()})
    days: dict[str, dict[str, int]] = {}
    for summaries in instances.values():
        last = summaries[-1]
        day = days.setdefault(last["day"].isoformat(), {"runs": 0, "delivered": 0, "skipped_delivered": 0})
        day["runs"] += 1
        day["delivered"] += sum(summary["delivered"] for summary in summaries)  # each try's own
        day["skipped_delivered"] += summaries[0]["skipped_delivered"]  # by other runs
    return days


def compare(reader: HistoryReader, where: HistoryFilter, expected: dict[str, dict[str, int]]) -> list[dict]:
    days = reader.daily(where)
    assert {day["day"]: {key: day[key] for key in ("runs", "delivered", "skipped_delivered")} for day in days} == (
        expected
    )
    for day in days:
        assert sum(day[name] for name in BUCKET_COLUMNS) == day["rows_read"]
    return days


def without_rollup(engine: sa.Engine, table_name: str) -> HistoryReader:
    """A reader that computes the figures from the history rows (the rollup's mark of completeness removed)."""
    reader = HistoryReader(engine, table_name)
    with engine.begin() as connection:
        connection.execute(sa.delete(reader.days).where(reader.days.c.dag_id == ""))
    return reader


def test_the_rollup_gives_the_figures_of_the_history_rows(history_database):
    engine, table_name = history_database
    rng = random.Random(7)
    tries = random_tries(rng, 60, dt.date(2026, 4, 1))
    history = RunHistory(engine, table_name)
    history.ensure_table()
    for identity, summary, outcome in tries:
        history.record(identity, summary, outcome, None)
    where = HistoryFilter(dt.date(2026, 3, 1), dt.date(2026, 5, 1))

    reader = HistoryReader(engine, table_name)
    days = compare(reader, where, expected_days(tries))
    reasons = reader.top_reasons(where)
    runs, total = reader.runs(where, limit=500, offset=0)
    assert total == len(tries) == len(runs)
    only_a = reader.daily(HistoryFilter(where.start_date, where.end_date, dag_id="dag_a"))
    tasks = reader.tasks(where)

    slow = without_rollup(engine, table_name)
    with engine.connect() as connection:
        assert not slow._rollup_ready(connection)
    assert slow.daily(where) == days
    assert slow.top_reasons(where) == reasons
    assert slow.runs(where, limit=500, offset=0)[1] == total
    assert slow.daily(HistoryFilter(where.start_date, where.end_date, dag_id="dag_a")) == only_a
    assert slow.tasks(where) == tasks
    assert {reason["reason"] for reason in reasons} <= {*REASONS, *MESSAGES}


def test_a_history_of_the_previous_version_is_migrated_and_rolled_up_once(history_database):
    engine, table_name = history_database
    rng = random.Random(8)
    old_tries = random_tries(rng, 40, dt.date(2026, 4, 1))
    previous = run_history_table(table_name)  # as an earlier version made it: no rolled_up, no rollup tables
    previous_columns = [column._copy() for column in previous.columns if column.name != "rolled_up"]
    schema, _, name = table_name.rpartition(".")
    old_table = sa.Table(name, sa.MetaData(), *previous_columns, schema=schema or None, mysql_charset="utf8mb4")
    old_table.create(engine)
    recorded_at = dt.datetime(2026, 4, 6, tzinfo=dt.UTC)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(old_table),
            [
                history_row(identity, summary, outcome, None, recorded_at=recorded_at)
                for identity, summary, outcome in old_tries
            ],
        )

    # New tries of some of the same task instances, by writers that find the table of the previous version.
    last_tries = {(i.dag_id, i.task_id, i.run_id, i.map_index): (i, summary) for i, summary, _ in old_tries}
    new_tries = []
    for identity, summary in list(last_tries.values())[-12:]:  # a retry that skips what the last try delivered
        retry = RunIdentity(**{**identity.__dict__, "try_number": identity.try_number + 1})
        skipped = summary["skipped_delivered"] + summary["delivered"]
        new_tries.append((retry, {**summary, "delivered": 0, "skipped_delivered": skipped}, "success"))
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def write(part: int) -> None:
        options = {"connect_args": {"timeout": 30}} if engine.dialect.name == "sqlite" else {}
        writer = RunHistory(sa.create_engine(engine.url, poolclass=sa.NullPool, **options), table_name)
        try:
            barrier.wait(timeout=30)
            writer.ensure_table()
            for identity, summary, outcome in new_tries[part::4]:
                writer.record(identity, summary, outcome, None)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            writer.engine.dispose()

    threads = [threading.Thread(target=write, args=(part,)) for part in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []

    everything = sorted(
        [*old_tries, *new_tries],
        key=lambda item: (item[0].dag_id, item[0].task_id, item[0].run_id, item[0].map_index, item[0].try_number),
    )
    where = HistoryFilter(dt.date(2026, 3, 1), dt.date(2026, 5, 1))
    reader = HistoryReader(engine, table_name)
    with engine.connect() as connection:
        assert reader._rollup_ready(connection)
    days = compare(reader, where, expected_days(everything))
    RunHistory(engine, table_name).ensure_table()  # once more: the rollup is complete, nothing is added
    assert HistoryReader(engine, table_name).daily(where) == days
    with engine.connect() as connection:
        flags = connection.execute(sa.text(f"SELECT rolled_up, COUNT(*) FROM {table_name} GROUP BY rolled_up")).all()
    assert dict(flags) == {0: len(old_tries), 1: len(new_tries)}
    assert without_rollup(engine, table_name).daily(where) == days


def test_rollup_names_fit_every_database():
    days, reasons = rollup_table_names("s." + "h" * 63)
    assert days.startswith("s.") and len(days) == 65 and len(reasons) == 65
    assert rollup_table_names("gravity_run_history") == (
        "gravity_run_history_days",
        "gravity_run_history_reasons",
    )
    assert "rows_read" in COUNT_COLUMNS
