"""``make demo``: run the nightly Gravity DAG for one day against the local sandbox, end to end.

Steps: a throwaway ``AIRFLOW_HOME`` in ``.airflow-demo/`` (kept between runs, ``--fresh`` wipes it),
``airflow db migrate``, a seeded SQLite warehouse, the Gravity sandbox on a free loopback port,
``airflow dags test gravity_offline_conversions`` for four seeded nights (each also adds its rows to the
run history table), then the last night's run summaries (the tasks' XCom return values), the sandbox's
statistics and the run history per day, and the URL of the Gravity view, which ``--serve``
(``make demo-view``) serves. Run it twice: the second run reads the same rows and delivers none of them
again, because the delivery log remembers them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script (`python demo/run_demo.py`), so `demo` is not importable

from demo.sample_data import SampleConfig, write_sqlite  # noqa: E402
from demo.view import history_days, install_history_policy, serve, view_settings, view_url  # noqa: E402

DAG_ID = "gravity_offline_conversions"
TASK_IDS = ("send_crm_conversions", "send_store_purchases")
DEMO_API_KEY = "demo-key"
#: Nights sent, from the first seeded day: each interval ends before the last seeded day begins.
NIGHTS = 4
VENV_BIN = Path(sys.executable).parent
SUMMARY_ROWS = (
    ("rows read", "rows_read"),
    ("delivered", "delivered"),
    ("duplicate (Gravity)", "duplicate"),
    ("rejected (Gravity)", "rejected"),
    ("invalid (local)", "invalid"),
    ("skipped, already delivered", "skipped_delivered"),
    ("undelivered", "undelivered"),
    ("HTTP requests", "requests"),
    ("seconds", "seconds"),
)


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where its log is."""


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def airflow_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        PATH=str(VENV_BIN) + os.pathsep + env.get("PATH", ""),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
    )
    env.update(view_settings(home))
    return env


def run_logged(command: list[str], env: dict[str, str], log_path: Path, timeout: float) -> None:
    with open(log_path, "w", encoding="utf-8") as log:
        completed = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    if completed.returncode != 0:
        tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-40:])
        raise DemoError(f"`{' '.join(command[1:])}` failed (exit {completed.returncode}); log: {log_path}\n{tail}")


def seed_warehouse(home: Path) -> dict[str, Any]:
    """Create the SQLite warehouse once: five days ending yesterday (UTC). Return what was seeded."""
    info_path = home / "warehouse.json"
    if info_path.exists():
        return json.loads(info_path.read_text())
    today = dt.datetime.now(dt.UTC).date()
    config = SampleConfig(days=5, start=today - dt.timedelta(days=5))
    counts = write_sqlite(home / "warehouse.db", config)
    info = {"start": config.start.isoformat(), "days": config.days, "rows": counts}
    info_path.write_text(json.dumps(info))
    return info


class Sandbox:
    """The Gravity sandbox as a subprocess on a free loopback port, stopped by its pid."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Sandbox:
        command = [
            sys.executable,
            "-m",
            "airflow_provider_gravity.sandbox",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--api-key",
            DEMO_API_KEY,
        ]
        with open(self.log_path, "w", encoding="utf-8") as log:
            self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoError(f"the sandbox exited with code {self.process.returncode}; log: {self.log_path}")
            try:
                requests.get(self.url + "/sandbox/stats", timeout=1).raise_for_status()
                return self
            except requests.RequestException:
                time.sleep(0.2)
        self.__exit__()
        raise DemoError(f"the sandbox did not answer within 30 s; log: {self.log_path}")

    def stats(self) -> dict[str, Any]:
        return requests.get(self.url + "/sandbox/stats", timeout=10).json()

    def __exit__(self, *exc_info: object) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, 15)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, 9)
                self.process.wait()


def run_summaries(home: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """The latest run of the DAG and its tasks' return values, read from the metadata database."""
    with sqlite3.connect(home / "airflow.db") as db:
        run_id = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (DAG_ID,)
        ).fetchone()[0]
        rows = db.execute(
            "SELECT task_id, value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value'",
            (DAG_ID, run_id),
        ).fetchall()
    summaries = {}
    for task_id, value in rows:
        decoded = json.loads(value)
        summaries[task_id] = json.loads(decoded) if isinstance(decoded, str) else decoded
    return run_id, summaries


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for number, row in enumerate(cells):
        pairs = enumerate(zip(row, widths, strict=True))
        aligned = [cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in pairs]
        lines.append("  ".join(aligned))
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_table(summaries: dict[str, dict[str, Any]]) -> str:
    header = ["", *(task_id.removeprefix("send_") for task_id in TASK_IDS)]
    rows = [[label, *(summaries.get(t, {}).get(key, "-") for t in TASK_IDS)] for label, key in SUMMARY_ROWS]
    reasons = sorted({r for s in summaries.values() for r in s.get("invalid_reasons", {})})
    rows += [
        [f"  invalid: {r}", *(summaries.get(t, {}).get("invalid_reasons", {}).get(r, 0) for t in TASK_IDS)]
        for r in reasons
    ]
    drops = sorted({r for s in summaries.values() for r in s.get("field_drops", {})})
    rows += [
        [f"  field dropped: {r}", *(summaries.get(t, {}).get("field_drops", {}).get(r, 0) for t in TASK_IDS)]
        for r in drops
    ]
    keys = sorted({k for s in summaries.values() for k in s.get("match_key_coverage", {})})
    rows += [
        [f"  match key {k}", *(f"{summaries.get(t, {}).get('match_key_coverage', {}).get(k, 0):.0%}" for t in TASK_IDS)]
        for k in keys
    ]
    return format_table(header, rows)


def sandbox_table(stats: dict[str, Any]) -> str:
    rows = [["requests", stats.get("requests")], ["events received", stats.get("events_received")]]
    rows += [[f"  status {status}", count] for status, count in sorted(stats.get("by_status", {}).items())]
    rows += [
        ["largest batch", stats.get("largest_batch")],
        ["plaintext PII seen", stats.get("plaintext_pii_seen")],
        ["max deliveries of one event", stats.get("max_deliveries_of_one_event")],
    ]
    return format_table(["sandbox", ""], rows)


def delivery_log_count(home: Path) -> int:
    with sqlite3.connect(home / "warehouse.db") as db:
        try:
            return db.execute("SELECT count(*) FROM gravity_delivery_log").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def print_history(home: Path) -> None:
    days = history_days(home)
    rows = [list(day) for day in days]
    print(f"\nRun history: {len(days)} days in gravity_run_history (in {home / 'warehouse.db'})\n")
    print(format_table(["day", "task runs", "rows read", "delivered", "rejected", "invalid"], rows))
    print(
        f"\nGravity view: {view_url()}  (Browse > Gravity in the Airflow UI). Serve it with `make demo-view`, "
        "log in as admin / admin."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=REPO_ROOT / ".airflow-demo", help="AIRFLOW_HOME to use")
    parser.add_argument("--fresh", action="store_true", help="wipe the home first (new warehouse and log)")
    parser.add_argument("--serve", action="store_true", help="serve the Gravity view of an earlier run, until Ctrl-C")
    parser.add_argument("--port", type=int, default=8080, help="port of the api-server that --serve starts")
    args = parser.parse_args(argv)
    home: Path = args.home.resolve()
    if args.serve:
        if not (home / "warehouse.db").exists():
            print("Run `make demo` first: there is no run history to show yet.", file=sys.stderr)
            return 1
        return serve(home, airflow_env(home), VENV_BIN / "airflow", args.port)
    if args.fresh and home.exists():
        shutil.rmtree(home)
    (home / "demo-logs").mkdir(parents=True, exist_ok=True)
    env = airflow_env(home)
    started = time.monotonic()
    second_run = (home / "warehouse.db").exists()

    try:
        print(f"Airflow home: {home}  ({'re-using warehouse and delivery log' if second_run else 'new'})")
        run_logged([str(VENV_BIN / "airflow"), "db", "migrate"], env, home / "demo-logs" / "db-migrate.log", 300)
        seeded = seed_warehouse(home)
        print(
            f"Warehouse: {home / 'warehouse.db'}  rows {seeded['rows']}, {seeded['days']} days "
            f"from {seeded['start']} (UTC)"
        )
        install_history_policy(home)
        # Each night sends the interval from 03:00 UTC of its day to 03:00 UTC the day after.
        first_day = dt.date.fromisoformat(seeded["start"])
        nights = [first_day + dt.timedelta(days=number) for number in range(NIGHTS)]

        with Sandbox(home / "demo-logs" / "sandbox.log") as sandbox:
            env["AIRFLOW_CONN_GRAVITY_DEFAULT"] = json.dumps(
                {"conn_type": "gravity", "host": sandbox.url, "password": DEMO_API_KEY}
            )
            env["AIRFLOW_CONN_GRAVITY_WAREHOUSE"] = json.dumps(
                {"conn_type": "sqlite", "host": str(home / "warehouse.db")}
            )
            print(f"Gravity target: the LOCAL SANDBOX at {sandbox.url} (pid {sandbox.process.pid}), not the real API")
            logical_dates = [f"{day + dt.timedelta(days=1)}T03:00:00+00:00" for day in nights]
            for day, logical_date in zip(nights, logical_dates, strict=True):
                print(f"Running: airflow dags test {DAG_ID} {logical_date}  (window {day} 03:00 -> next day 03:00 UTC)")
            run_logged(  # every night in one process (demo/run_nights.py): Airflow starts once
                [sys.executable, str(REPO_ROOT / "demo" / "run_nights.py"), DAG_ID, *logical_dates],
                env,
                home / "demo-logs" / "dags-test.log",
                600,
            )
            stats = sandbox.stats()

        run_id, summaries = run_summaries(home)
        missing = [t for t in TASK_IDS if t not in summaries]
        if missing:
            raise DemoError(f"no run summary for {missing}; log: {home / 'demo-logs' / 'dags-test.log'}")
        print(f"\nRun {run_id}: summaries (XCom return values)\n")
        print(summary_table(summaries))
        print()
        print(sandbox_table(stats))
        delivered_before = sum(s.get("skipped_delivered", 0) for s in summaries.values())
        print(
            f"\nDelivery log: {delivery_log_count(home)} events recorded in gravity_delivery_log "
            f"(in {home / 'warehouse.db'})."
        )
        if delivered_before:
            print(
                f"{delivered_before} events were already delivered by an earlier run and were NOT sent again; "
                f"the sandbox received {stats.get('events_received', 0)} events this time."
            )
        else:
            print(
                "Run `make demo` again: the delivery log will skip every event delivered now (`--fresh` starts over)."
            )
        print_history(home)
        print(
            "\nThe target was the local sandbox (python -m airflow_provider_gravity.sandbox), stopped now.\n"
            "To send to Gravity for real, set the connection to the real API instead, e.g.\n"
            '  export AIRFLOW_CONN_GRAVITY_DEFAULT=\'{"conn_type": "gravity", '
            '"host": "https://api.trygravity.ai", "password": "<your advertiser API key>"}\'\n'
            f"Logs: {home / 'demo-logs'}   Took {time.monotonic() - started:.0f} s."
        )
    except (DemoError, subprocess.TimeoutExpired) as error:
        print(f"\nDEMO FAILED: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
