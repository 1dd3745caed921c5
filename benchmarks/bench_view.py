"""
The Gravity view's queries at scale (issue 17, item 12): 1,000,000 run-history rows over 366 days and a delivery
log of 5,000,000 rows, on the local PostgreSQL. A benchmark, not a test: it prints the figures and writes them
to benchmarks/RESULTS.md between its own markers.

Both tables are first made as the previous version made them (no ``dag_id`` in the delivery log, no rollup of the
history) and filled in bulk; then the provider's own ``ensure_table`` migrates them, timed, once; then each
endpoint's queries run as the endpoint runs them (``HistoryReader``, the code behind ``/gravity/api/*``; the
api-server's own few milliseconds are not in the figures), the median of 5 runs after one warm-up.

    .venv/bin/python benchmarks/bench_view.py                    # the sizes above, about 10 minutes
    .venv/bin/python benchmarks/bench_view.py --history-rows 100000 --log-rows 500000 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_provider_gravity.conversions.run.delivery_log import DeliveryLog
from airflow_provider_gravity.history.queries import HistoryFilter, HistoryReader
from airflow_provider_gravity.history.writer import RunHistory, RunIdentity
from airflow_provider_gravity.storage.delivery_log_table import DELIVERY_LOG_COLUMNS, delivery_log_table
from airflow_provider_gravity.storage.run_history_tables import run_history_table

POSTGRES_URL = os.environ.get("GRAVITY_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
BEGIN, END = "<!-- bench_view.py: begin (generated) -->", "<!-- bench_view.py: end -->"
FIRST_DAY = dt.date(2025, 1, 1)
DAYS = 366
DAGS = 20
REPEATS = 5


def timed(work: Callable[[], object]) -> float:
    work()  # warm-up
    runs = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        work()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def load_history(engine: sa.Engine, table_name: str, rows: int) -> None:
    """``rows`` tries over 366 days as the previous version stored them: 20 DAGs x 3 tasks, mapped, 2 % retried."""
    previous = run_history_table(table_name)
    columns = [column._copy() for column in previous.columns if column.name != "rolled_up"]
    schema, name = table_name.split(".")
    sa.Table(name, sa.MetaData(), *columns, schema=schema).create(engine)
    per_day = -(-rows // DAYS)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"""
            INSERT INTO {table_name} (dag_id, task_id, map_index, run_id, try_number, day, data_interval_start,
              data_interval_end, recorded_at, outcome, failure, rows_read, delivered, duplicate, rejected, invalid,
              skipped_delivered, undelivered, events_sent, attributed, changed_since_delivery, requests, retries,
              error_rate, seconds, rows_per_second, coverage_em, coverage_ph, coverage_fn_ln, coverage_external_id,
              coverage_click_id, invalid_reasons, rejected_errors, field_drops, summary)
            SELECT 'gravity_dag_' || (k %% {DAGS}), 'send_' || ((k / {DAGS}) %% 3), k / ({DAGS} * 3),
              'scheduled__' || d::text || 'T03:00:00+00:00', CASE WHEN retry THEN 2 ELSE 1 END,
              d, d, d + 1, d + 1, 'success', NULL,
              5000, CASE WHEN retry THEN 1500 ELSE 4800 END, 50, 10 + g %% 20, 100 + g %% 40,
              CASE WHEN retry THEN 3300 ELSE 0 END, 0, 4860, 120, 0, 5, 0, 0.03, 2.0, 2500,
              0.8, 0.7, 0.9, 0.5, 0.2,
              '{{"bad_currency": ' || (g %% 7) || ', "bad_event_time": 3, "missing_event_id": ' || (g %% 5) || '}}',
              '{{"error: event_time is more than 7 days old": ' || (g %% 4) || ', "error: invalid currency '
                || (g %% 13) || '": 2}}',
              '{{"invalid_phone": 12}}',
              '{{"rows_read": 5000, "delivered": 4800, "note": "' || repeat('x', 700) || '"}}'
            FROM generate_series(0, {rows - 1}) g,
              LATERAL (SELECT DATE '{FIRST_DAY}' + (g / {per_day}) AS d, g %% {per_day} AS j) dd,
              LATERAL (SELECT j %% 50 = 49 AS retry) rr,
              LATERAL (SELECT CASE WHEN retry THEN j - 1 ELSE j END AS k) kk
            ORDER BY g
            """
        )


def load_delivery_log(engine: sa.Engine, table_name: str, rows: int) -> None:
    """``rows`` events over 400 days as the previous version stored them: 3 % rejected, 1 % invalid."""
    schema, name = table_name.split(".")
    current = delivery_log_table(name, schema)
    columns = [current.c[column]._copy() for column in DELIVERY_LOG_COLUMNS]
    sa.Table(name, sa.MetaData(), *columns, schema=schema).create(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"""
            INSERT INTO {table_name} (event_name, event_id, status, detail, payload_sha256, attempts, first_run_id,
              last_run_id, first_recorded_at, last_recorded_at)
            SELECT 'Purchase', 'order-' || g, status,
              CASE status WHEN 'rejected' THEN 'error: invalid event_time' WHEN 'invalid' THEN 'bad_currency'
                ELSE 'ok' END,
              CASE WHEN status = 'delivered' THEN md5(g::text) || md5((g + 1)::text) END, 1,
              'scheduled__' || at::date::text, 'scheduled__' || at::date::text, at, at
            FROM generate_series(0, {rows - 1}) g,
              LATERAL (SELECT TIMESTAMPTZ '2024-12-01 03:00:00+00' + (g %% 400) * INTERVAL '1 day'
                + (g %% 3600) * INTERVAL '1 second' AS at) tt,
              LATERAL (SELECT CASE WHEN g %% 100 < 3 THEN 'rejected' WHEN g %% 100 = 3 THEN 'invalid'
                ELSE 'delivered' END AS status) ss
            """
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history-rows", type=int, default=1_000_000)
    parser.add_argument("--log-rows", type=int, default=5_000_000)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    arguments = parser.parse_args()
    engine = sa.create_engine(POSTGRES_URL)
    schema = f"bench_view_{uuid.uuid4().hex[:8]}"
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    history_name, log_name = f"{schema}.run_history", f"{schema}.delivery_log"
    figures: list[tuple[str, str]] = []
    try:
        started = time.perf_counter()
        load_history(engine, history_name, arguments.history_rows)
        load_delivery_log(engine, log_name, arguments.log_rows)
        print(f"loaded in {time.perf_counter() - started:.0f} s")

        started = time.perf_counter()
        RunHistory(engine, history_name).ensure_table()
        history_migration = time.perf_counter() - started
        log = DeliveryLog(engine, log_name, dag_id="gravity_dag_0", task_id="send_0")
        started = time.perf_counter()
        log.ensure_table()
        log_migration = time.perf_counter() - started
        # Rows written after the migration carry their DAG: give 90 % of the dead letter one, as if re-recorded since.
        with engine.begin() as connection:
            connection.exec_driver_sql(
                f"UPDATE {log_name} SET dag_id = 'gravity_dag_' || (abs(hashtext(event_id)) %% {DAGS}), "
                f"task_id = 'send_0' WHERE status <> 'delivered' AND abs(hashtext(event_id)) %% 10 <> 0"
            )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in (history_name, f"{history_name}_days", f"{history_name}_reasons", log_name):
                connection.exec_driver_sql(f"VACUUM ANALYZE {table}")

        reader = HistoryReader(engine, history_name, log_name)
        year = HistoryFilter(FIRST_DAY, FIRST_DAY + dt.timedelta(days=DAYS - 1))
        month = HistoryFilter(dt.date(2025, 12, 1), dt.date(2025, 12, 31))
        some_dags = frozenset({"gravity_dag_3", "gravity_dag_7"})
        limited = HistoryFilter(year.start_date, year.end_date, permitted_dag_ids=some_dags)
        one_dag = HistoryFilter(year.start_date, year.end_date, dag_id="gravity_dag_3")

        def daily(where: HistoryFilter) -> Callable[[], object]:
            return lambda: (reader.daily(where), reader.top_reasons(where), reader.tasks(where))

        def dead_letter(where: HistoryFilter) -> Callable[[], object]:
            def run() -> object:
                return reader.dead_letter(where, status=None, event_name=None, limit=100, offset=0)

            return run

        measured = [
            ("/api/daily, 366 days, every DAG", daily(year)),
            (
                "/api/daily, 366 days, a reader of 2 DAGs (+ asking the auth manager about the DAGs: dag_ids)",
                lambda: (reader.dag_ids(), daily(limited)()),
            ),
            ("/api/daily, 366 days, ?dag_id=", daily(one_dag)),
            ("/api/runs, 366 days, first page of 100", lambda: reader.runs(year, limit=100, offset=0)),
            (
                "/api/runs, 366 days, ?dag_id=, page at offset 10,000",
                lambda: reader.runs(one_dag, limit=100, offset=10_000),
            ),
            ("/api/dead-letter, 366 days, every DAG", dead_letter(year)),
            ("/api/dead-letter, 31 days, every DAG", dead_letter(month)),
            (
                "/api/dead-letter, 366 days, a reader of 2 DAGs (+ dead_letter_dag_ids)",
                lambda: (reader.dead_letter_dag_ids(year), dead_letter(limited)()),
            ),
            ("/api/dead-letter, 366 days, ?dag_id=", dead_letter(one_dag)),
        ]
        for label, work in measured:
            reader._ready = None
            seconds = timed(work)
            print(f"{label:<95} {seconds * 1000:8.1f} ms")
            figures.append((label, f"{seconds * 1000:,.0f} ms"))

        history = RunHistory(engine, history_name)
        identity = RunIdentity("gravity_dag_0", "send_0", 0, "scheduled__2025-12-31T03:00:00+00:00", 3)
        summary = {"rows_read": 5000, "delivered": 10, "skipped_delivered": 4790, "invalid_reasons": {"bad_value": 1}}
        record = timed(lambda: history.record(identity, summary, "success", None))
        with engine.connect() as connection:
            counts = {
                name: connection.scalar(sa.text(f"SELECT count(*) FROM {name}"))
                for name in (history_name, f"{history_name}_days", f"{history_name}_reasons", log_name)
            }
            dead = connection.scalar(sa.text(f"SELECT count(*) FROM {log_name} WHERE status <> 'delivered'"))
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()

    once = [
        ("migration of the history (a column, 2 indexes, the rollup filled from every row), once", history_migration),
        ("migration of the delivery log (2 columns, 2 indexes), once", log_migration),
        ("one try recorded (its row and its change to the rollup), after", record),
    ]
    for label, seconds in once:
        print(f"{label:<95} {seconds:8.2f} s")
    sizes = (
        f"{counts[history_name]:,} history rows over {DAYS} days ({DAGS} DAGs x 3 tasks, mapped, 2 % retried), "
        f"rolled up into {counts[history_name + '_days']:,} day rows and {counts[history_name + '_reasons']:,} reason "
        f"rows; a delivery log of {counts[log_name]:,} rows, {dead:,} of them rejected or invalid, 10 % without a DAG"
    )
    print(sizes)
    if arguments.no_write:
        return
    lines = [
        BEGIN,
        "## The Gravity view at scale",
        "",
        f"`benchmarks/bench_view.py` on {platform.machine()} with {os.cpu_count()} cores, the local PostgreSQL "
        f"({_server_version()}); {time.strftime('%Y-%m-%d')}. {sizes}. Each figure is the median of 5 runs of what the "
        "endpoint queries (`HistoryReader`), after one warm-up; the api-server adds a few milliseconds.",
        "",
        "| endpoint | time |",
        "|---|---:|",
        *(
            f"| `{label.split(',', 1)[0]}`{',' + label.split(',', 1)[1] if ',' in label else ''} | {value} |"
            for label, value in figures
        ),
        "",
        "| once, or per try | time |",
        "|---|---:|",
        *(
            f"| {label} | {seconds:,.2f} s |" if seconds >= 1 else f"| {label} | {seconds * 1000:,.1f} ms |"
            for label, seconds in once
        ),
        "",
        "Before (issue 17): `/api/daily` over 366 days of 1,000,000 rows took 11.3 s (every row's JSON loaded for "
        "`top_reasons`, every try grouped to find the last ones), `/api/dead-letter` 1.0-1.2 s at 5,000,000 rows "
        "(a scan of the whole log). The previous queries on this machine and data like these: `/api/daily` about 42 s.",
        END,
    ]
    text = RESULTS.read_text(encoding="utf-8")
    section = "\n".join(lines)
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text, encoding="utf-8")
    print(f"written to {RESULTS}")


def _server_version() -> str:
    engine = sa.create_engine(POSTGRES_URL)
    with engine.connect() as connection:
        version = connection.scalar(sa.text("SHOW server_version"))
    engine.dispose()
    return f"PostgreSQL {str(version).split()[0]}"


if __name__ == "__main__":
    main()
