"""Celery scaling benchmark: the same sharded backfill on 1 and on 2 ``airflow celery worker`` processes.

Run from the repository root with ``make bench-celery`` or ``.venv/bin/python benchmarks/bench_celery.py``.

For each worker count, a fresh CeleryExecutor deployment (``celery_deployment.CeleryAirflow``: Redis broker,
scratch PostgreSQL metadata database, api-server, scheduler, dag-processor, the workers) runs
``airflow backfill create`` of ``gravity_offline_conversions_sharded`` over generated days of
``store_transactions``, with the delivery log, against a fresh sandbox (``--no-store-events``). Throughput is
rows over the backfill's wall time (``backfill create`` to the last run finished) and over the span of its
tasks (first task start to last task end, which leaves out the scheduler's latency). The table is printed and
written to ``benchmarks/RESULTS.md`` under its own heading; the file's other sections are left as they are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from airflow_provider_gravity.sandbox.launcher import SandboxServer  # noqa: E402
from benchmarks.celery_deployment import (  # noqa: E402
    CeleryAirflow,
    CeleryWorker,
    create_store_transactions,
    drop_database,
    scratch_database_url,
)

RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"
HEADING = "## Celery: the sharded backfill on 1 and 2 workers"
BEGIN, END = "<!-- bench_celery.py: begin (generated) -->", "<!-- bench_celery.py: end -->"
DAG_ID = "gravity_offline_conversions_sharded"
SERVER_URL = os.environ.get("GRAVITY_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
BROKER_DATABASE = 8  # the Celery test uses 7
FIRST_DAY = dt.date(2025, 6, 2)
API_KEY = "bench-celery-key"


@dataclass
class Measurement:
    workers: int
    slots: int
    rows: int
    wall_seconds: float
    task_span_seconds: float
    task_seconds: float
    tasks_by_worker: dict[str, int]

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.wall_seconds

    @property
    def rows_per_task_second(self) -> float:
        return self.rows / self.task_span_seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=3, help="days backfilled, one DAG run each (default 3)")
    parser.add_argument("--rows-per-day", type=int, default=100_000, help="rows of each day (default 100,000)")
    parser.add_argument("--shards", type=int, default=4, help="hash shards per day (default 4)")
    parser.add_argument("--concurrency", type=int, default=2, help="task slots per worker (default 2)")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    parser.add_argument("--home", default=None, help="folder for each run's AIRFLOW_HOME and logs (default: /tmp)")
    return parser.parse_args(argv)


def run_backfill(args: argparse.Namespace, workers: int, warehouse: sa.Engine) -> Measurement:
    with warehouse.begin() as connection:  # a fresh delivery log: every row is sent again
        connection.exec_driver_sql("DROP TABLE IF EXISTS gravity_delivery_log")
    rows = args.days * args.rows_per_day
    sandbox = SandboxServer(api_key=API_KEY, extra_args=["--no-store-events", "--log-level", "warning"]).start()
    pool = [CeleryWorker(f"worker-{index + 1}", args.concurrency) for index in range(workers)]
    env = {
        "AIRFLOW_CONN_GRAVITY_DEFAULT": json.dumps({"conn_type": "gravity", "host": sandbox.url, "password": API_KEY}),
        "AIRFLOW_CONN_GRAVITY_WAREHOUSE": warehouse.url.set(drivername="postgres").render_as_string(False),
        "GRAVITY_DAG_SCHEDULE": "0 0 * * *",
        "GRAVITY_DAG_TIMEZONE": "UTC",
        "GRAVITY_DAG_START_DATE": FIRST_DAY.isoformat(),
        "GRAVITY_DAG_SHARDS": str(args.shards),
        "GRAVITY_DAG_RETRIES": "0",  # a benchmark reports a failure, it does not wait out retry delays
    }
    try:
        home = Path(tempfile.mkdtemp(prefix=f"bench-celery-{workers}-workers-", dir=args.home))
        with CeleryAirflow(home, SERVER_URL, BROKER_DATABASE, pool, env) as airflow:
            airflow.wait_until(
                lambda: airflow.query("SELECT 1 FROM serialized_dag WHERE dag_id = %s", (DAG_ID,)), 120, DAG_ID
            )
            airflow.cli("dags", "unpause", DAG_ID)
            last_day = FIRST_DAY + dt.timedelta(days=args.days - 1)
            print(f"-> {workers} worker(s) x {args.concurrency} slots: backfill of {rows:,} rows ...", flush=True)
            started = time.monotonic()
            airflow.cli(
                "backfill", "create", "--dag-id", DAG_ID, "--from-date", FIRST_DAY.isoformat(),
                "--to-date", last_day.isoformat(), "--max-active-runs", str(args.days),
            )  # fmt: skip
            airflow.wait_until(lambda: _runs_finished(airflow, args.days), 1800, "the backfill", interval=0.5)
            wall = time.monotonic() - started
            measurement = _measure(airflow, workers, args.concurrency, rows, wall)
        delivered = sandbox.stats()["by_status"]["ok"]
        if delivered != rows:
            raise RuntimeError(f"the sandbox accepted {delivered:,} events, not {rows:,}")
    finally:
        sandbox.close()
    print(
        f"   {rows:,} rows in {measurement.wall_seconds:.1f}s = {measurement.rows_per_second:,.0f} rows/s "
        f"(tasks' span {measurement.task_span_seconds:.1f}s); tasks per worker {measurement.tasks_by_worker}",
        flush=True,
    )
    return measurement


#: The backfill's task instances (unpausing the DAG also starts one scheduled run, which is left out).
_BACKFILL_TASKS = (
    "FROM task_instance ti JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id "
    "WHERE dr.backfill_id IS NOT NULL"
)


def _runs_finished(airflow: CeleryAirflow, expected: int) -> bool:
    runs = airflow.query("SELECT state FROM dag_run WHERE backfill_id IS NOT NULL")
    failed = airflow.query(f"SELECT ti.run_id, ti.task_id, ti.map_index {_BACKFILL_TASKS} AND ti.state = 'failed'")
    if failed:
        raise RuntimeError(f"tasks of the backfill failed: {failed}; see the task logs under {airflow.home}/logs")
    return [run["state"] for run in runs].count("success") == expected


def _measure(airflow: CeleryAirflow, workers: int, concurrency: int, rows: int, wall: float) -> Measurement:
    tasks = airflow.query(f"SELECT ti.hostname, ti.start_date, ti.end_date {_BACKFILL_TASKS} AND ti.state = 'success'")
    span = max(t["end_date"] for t in tasks) - min(t["start_date"] for t in tasks)
    by_worker: dict[str, int] = {}
    for task in tasks:
        by_worker[task["hostname"]] = by_worker.get(task["hostname"], 0) + 1
    busy = sum((t["end_date"] - t["start_date"]).total_seconds() for t in tasks)
    return Measurement(workers, workers * concurrency, rows, wall, span.total_seconds(), busy, by_worker)


def render_section(measurements: list[Measurement], args: argparse.Namespace) -> str:
    base = measurements[0]
    lines = [
        HEADING,
        "",
        f"Generated by `make bench-celery` (`benchmarks/bench_celery.py`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"on the machine above ({os.cpu_count()} cores), while other work ran on it. `airflow backfill create` of "
        f"`{DAG_ID}` over {args.days} days of {args.rows_per_day:,} generated `store_transactions` rows "
        f"({args.shards} shards a day, so {args.days * args.shards} store tasks and as many empty CRM tasks), "
        "delivery log on, CeleryExecutor with Redis, each worker "
        f"`--concurrency {args.concurrency}`, operator defaults (`chunk_size` 10,000, `max_concurrency` 4, batches "
        "of 1,000). Wall time runs from `backfill create` to the last run's success; the tasks' span from the "
        "first task's start to the last task's end.",
        "",
        "| workers | task slots | rows | wall s | rows/s (wall) | tasks' span s | rows/s (span) | task-seconds | "
        "tasks per worker | speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for m in measurements:
        per_worker = ", ".join(f"{name} {count}" for name, count in sorted(m.tasks_by_worker.items()))
        lines.append(
            f"| {m.workers} | {m.slots} | {m.rows:,} | {m.wall_seconds:.1f} | {m.rows_per_second:,.0f} | "
            f"{m.task_span_seconds:.1f} | {m.rows_per_task_second:,.0f} | {m.task_seconds:.0f} | {per_worker} | "
            f"{m.rows_per_second / base.rows_per_second:.2f}x |"
        )
    lines += [
        "",
        "Task-seconds add up every task's run time: when they grow with the slots while the wall time does not "
        "shrink, the tasks are sharing the same cores, not running faster. On 2 cores the worker processes, the "
        "scheduler, the api-server, PostgreSQL and the sandbox all compete for the CPU, so a second worker adds "
        "slots but no CPU; on separate machines each worker brings its own cores.",
        "",
    ]
    return "\n".join(lines)


def write_section(section: str) -> None:
    """Replace this benchmark's part of RESULTS.md, between its markers (or append it); leave the rest alone."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    pattern = re.compile(rf"{re.escape(BEGIN)}.*?{re.escape(END)}\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = scratch_database_url(SERVER_URL, "gravity_bench_celery_warehouse")
    warehouse = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        create_store_transactions(warehouse, FIRST_DAY, args.days, args.rows_per_day)
        measurements = [run_backfill(args, int(count), warehouse) for count in args.workers.split(",")]
    finally:
        warehouse.dispose()
        drop_database(url)
    section = render_section(measurements, args)
    print("\n" + section)
    if not args.no_write:
        write_section(section)
        print(f"written to {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
