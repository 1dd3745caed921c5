"""The demo's run history and Gravity view: what ``make demo`` adds for them, and ``make demo-view``.

The nightly DAG in ``dags/`` sets no ``run_history_table``. The demo turns the history on for every
``SendConversionsOperator`` of its Airflow with a cluster policy in ``AIRFLOW_HOME/config/airflow_local_settings.py``,
which is also how a deployment can turn it on without editing its DAGs. The view reads the table through the
``[gravity]`` settings given here as environment variables.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import requests

RUN_HISTORY_TABLE = "gravity_run_history"
WAREHOUSE_CONN_ID = "gravity_warehouse"
VIEW_PORT = 8080
DEMO_USER = "admin"
DEMO_PASSWORD = "admin"  # a throwaway Airflow on the loopback interface only

CLUSTER_POLICY = f'''"""Written by the Gravity demo: every SendConversionsOperator also records its run history."""


def task_policy(task):
    if type(task).__name__ == "SendConversionsOperator" and not getattr(task, "run_history_table", None):
        task.run_history_table = "{RUN_HISTORY_TABLE}"
'''


def install_history_policy(home: Path) -> None:
    """Write the cluster policy that sets ``run_history_table`` on the Gravity tasks of this Airflow home."""
    config = home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "airflow_local_settings.py").write_text(CLUSTER_POLICY, encoding="utf-8")


def view_settings(home: Path) -> dict[str, str]:
    """Environment of the demo's Airflow processes for the view: its tables, its connection, one known login."""
    return {
        "AIRFLOW__GRAVITY__RUN_HISTORY_CONN_ID": WAREHOUSE_CONN_ID,
        "AIRFLOW__GRAVITY__RUN_HISTORY_TABLE": RUN_HISTORY_TABLE,
        "AIRFLOW__GRAVITY__DELIVERY_LOG_TABLE": "gravity_delivery_log",
        "AIRFLOW_CONN_GRAVITY_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(home / "warehouse.db")}),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{DEMO_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(write_password_file(home)),
    }


def write_password_file(home: Path) -> Path:
    path = home / "simple_auth_manager_passwords.json"
    path.write_text(json.dumps({DEMO_USER: DEMO_PASSWORD}), encoding="utf-8")
    return path


def history_days(home: Path) -> list[tuple[str, int, int, int, int, int]]:
    """``(day, runs, rows read, delivered, rejected, invalid)`` per day of the run history (last try of each task)."""
    query = f"""
        SELECT day, count(*), sum(rows_read), sum(delivered), sum(rejected), sum(invalid)
        FROM {RUN_HISTORY_TABLE}
        WHERE id IN (SELECT max(id) FROM {RUN_HISTORY_TABLE} GROUP BY dag_id, task_id, run_id, map_index)
        GROUP BY day ORDER BY day
    """
    with sqlite3.connect(home / "warehouse.db") as db:
        try:
            return db.execute(query).fetchall()
        except sqlite3.OperationalError:
            return []


def view_url(port: int = VIEW_PORT) -> str:
    return f"http://127.0.0.1:{port}/gravity/"


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(home: Path, env: dict[str, str], airflow: Path, port: int) -> int:
    """Run the api-server of the demo's Airflow in the foreground until Ctrl-C; return its exit code."""
    log_path = home / "demo-logs" / "api-server.log"
    command = [str(airflow), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**env, "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}", "AIRFLOW__API__PORT": str(port)}
    with open(log_path, "w", encoding="utf-8") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    signal.signal(signal.SIGTERM, _stop)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(1)
        if server.poll() is not None:
            print(f"The api-server exited with code {server.returncode}; log: {log_path}")
            return 1
        print(
            f"\nGravity view: {view_url(port)}   (in the Airflow UI: Browse > Gravity, "
            f"http://127.0.0.1:{port}/plugin/gravity)\nLog in as {DEMO_USER} / {DEMO_PASSWORD}. "
            f"Ctrl-C stops the api-server (log: {log_path})."
        )
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
