"""A real ``airflow api-server`` serving the Gravity view, over a seeded run history and delivery log.

One api-server per test module (no scheduler, no dag-processor: the view needs neither), with
SimpleAuthManager's users and known passwords (``admin`` may read every DAG; ``reader``, through
:class:`~tests.support.one_dag_auth_manager.OneDagAuthManager`, only ``DAG_ID``), reading its tables from a
scratch PostgreSQL schema through the ``[gravity]`` settings. The history is written by the provider's own
writer: two weeks of nights of a DAG with two tasks, one of them retried once, and a second DAG on the same
schedule, so with the same run ids. The delivery log holds the dead letter of both, and rows written before it
recorded DAGs (no ``dag_id``).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from airflow_provider_gravity.conversions.run.delivery_log import DeliveryLog
from airflow_provider_gravity.history.writer import RunHistory, RunIdentity
from airflow_provider_gravity.storage.delivery_log_table import delivery_log_table
from tests.support.airflow_processes import VENV_BIN, AirflowProcesses
from tests.support.databases import POSTGRES_URL, airflow_uri, require_server
from tests.support.one_dag_auth_manager import LIMITS_VARIABLE

USERNAME = "admin"
PASSWORD = "gravity-view-test"
#: A user who may read DAG_ID only.
READER = "reader"
READER_PASSWORD = "gravity-view-reader"
DAG_ID = "gravity_offline_conversions"
OTHER_DAG_ID = "gravity_other_dag"
TASK_IDS = ("send_crm_conversions", "send_store_purchases")
NIGHTS = 14
INVALID_REASONS = ("bad_currency", "bad_event_time", "bad_value", "missing_event_id")
OTHER_DAG_MESSAGE = "error: the other DAG's own message"
REJECTED_ERRORS = ("error: event_time is more than 7 days old", "error: invalid currency")


class ApiServerOnly(AirflowProcesses):
    """:class:`AirflowProcesses` with the api-server alone, healthy once it reaches its metadata database."""

    def start(self) -> None:
        command = [str(VENV_BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--workers", "1"]
        with open(self.process_logs["api-server"], "ab") as log_file:
            self._processes["api-server"] = subprocess.Popen(
                [*command, "--port", str(self.port)],
                cwd=self.home,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_until(self._healthy, self.startup_timeout, "the api-server to answer")

    def _healthy(self) -> bool:
        try:
            health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=2).json()
        except (requests.RequestException, ValueError):
            return False
        return (health.get("metadatabase") or {}).get("status") == "healthy"


@dataclass
class GravityView:
    """The running view: its base URL, the database of its tables, and their names."""

    airflow: AirflowProcesses
    engine: sa.Engine
    history_table: str
    delivery_log_table: str
    first_day: dt.date
    last_day: dt.date

    @property
    def url(self) -> str:
        return f"{self.airflow.url}/gravity"

    def token(self, username: str = USERNAME, password: str = PASSWORD) -> str:
        response = requests.post(
            f"{self.airflow.url}/auth/token", json={"username": username, "password": password}, timeout=30
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def get(self, path: str, token: str | None = None, **parameters: object) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(f"{self.url}/{path}", params=parameters, headers=headers, timeout=60, allow_redirects=False)

    def history_rows(self) -> list[dict]:
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.exec_driver_sql(f"SELECT * FROM {self.history_table}").mappings()]

    def delivery_log_rows(self) -> list[dict]:
        with self.engine.connect() as connection:
            statement = f"SELECT * FROM {self.delivery_log_table}"
            return [dict(row) for row in connection.exec_driver_sql(statement).mappings()]


def _summary(rng: random.Random, night: int, rows: int) -> dict:
    invalid = {reason: rng.randint(0, 6) for reason in rng.sample(INVALID_REASONS, 2)}
    rejected = {REJECTED_ERRORS[0]: rng.randint(0, 4)} if night % 3 else {}
    buckets = {"invalid": sum(invalid.values()), "rejected": sum(rejected.values())}
    buckets["duplicate"] = rng.randint(0, 20)
    buckets["delivered"] = rows - sum(buckets.values())
    sent = buckets["delivered"] + buckets["duplicate"] + buckets["rejected"]
    drift = 0.1 if night in (9, 10) else 0.0  # two nights of weaker e-mail match keys
    return {
        "rows_read": rows,
        **buckets,
        "skipped_delivered": 0,
        "undelivered": 0,
        "invalid_reasons": {reason: count for reason, count in invalid.items() if count},
        "rejected_errors": {reason: count for reason, count in rejected.items() if count},
        "field_drops": {"invalid_phone": rng.randint(5, 20)},
        "changed_since_delivery": 0,
        "events_sent": sent,
        "attributed": rng.randint(100, 400),
        "match_key_coverage": {
            "em": round(0.88 - drift + rng.uniform(-0.02, 0.02), 4),
            "ph": round(0.8 + rng.uniform(-0.03, 0.03), 4),
            "fn_ln": round(0.93 + rng.uniform(-0.01, 0.01), 4),
            "external_id": round(0.62 + rng.uniform(-0.02, 0.02), 4),
            "click_id": round(0.24 + rng.uniform(-0.02, 0.02), 4),
        },
        "error_rate": round((buckets["invalid"] + buckets["rejected"]) / rows, 6),
        "requests": sent // 1000 + 1,
        "retries": rng.randint(0, 2),
        "seconds": round(rng.uniform(0.8, 3.0), 3),
        "rows_per_second": 0.0,
        "dry_run": False,
    }


def seed(engine: sa.Engine, history_table: str, log_table: str, last_day: dt.date) -> dt.date:
    """
    Two weeks of nights ending ``last_day`` of DAG_ID and of OTHER_DAG_ID (same run ids); the dead letter of
    their rejected and invalid rows, and a few rows of the dead letter from before the DAG was recorded.
    """
    rng = random.Random(13)
    history = RunHistory(engine, history_table)
    history.ensure_table()
    DeliveryLog(engine, log_table).ensure_table()
    dead_letter = delivery_log_table(log_table)
    first_day = last_day - dt.timedelta(days=NIGHTS - 1)
    log_rows = []
    for night in range(NIGHTS):
        start = dt.datetime.combine(first_day + dt.timedelta(days=night), dt.time(3), tzinfo=dt.UTC)
        run_id = f"scheduled__{(start + dt.timedelta(days=1)).isoformat()}"
        recorded = start + dt.timedelta(hours=24)
        for task_id, rows in zip(TASK_IDS, (1500, 2500), strict=True):
            summary = _summary(rng, night, rows + rng.randint(-60, 60))
            summary["rows_per_second"] = round(summary["rows_read"] / summary["seconds"], 1)
            identity = RunIdentity(DAG_ID, task_id, -1, run_id, 1, start, start + dt.timedelta(days=1))
            if night == 5 and task_id == TASK_IDS[0]:  # a first try that left events undelivered, then a retry
                failed = {**summary, "delivered": 400, "undelivered": summary["delivered"] - 400}
                history.record(identity, failed, "incomplete", "Gravity answered 503 five times")
                identity = RunIdentity(DAG_ID, task_id, -1, run_id, 2, start, start + dt.timedelta(days=1))
            history.record(identity, summary, "success", None)
            prefix = "crm" if task_id == TASK_IDS[0] else "pos"
            details = [*summary["invalid_reasons"].items(), *summary["rejected_errors"].items()]
            for detail, count in details:
                status = "rejected" if detail.startswith("error:") else "invalid"
                for _ in range(count):
                    log_rows.append(_logged(rng, prefix, status, detail, run_id, recorded, (DAG_ID, task_id)))
            log_rows.append(_logged(rng, prefix, "delivered", "ok", run_id, recorded, (DAG_ID, task_id)))
        # The other DAG, on the same schedule: the same run ids, its own dead letter.
        other = RunIdentity(OTHER_DAG_ID, "send", -1, run_id, 1, start, start + dt.timedelta(days=1))
        history.record(other, _summary(rng, night, 300), "success", None)
        for _ in range(2):
            other_row = _logged(rng, "oth", "rejected", OTHER_DAG_MESSAGE, run_id, recorded, (OTHER_DAG_ID, "send"))
            log_rows.append(other_row)
        if night < 3:  # written before the delivery log recorded DAGs
            log_rows.append(_logged(rng, "old", "invalid", "bad_value", run_id, recorded, (None, None)))
    history.record(
        RunIdentity(OTHER_DAG_ID, "send", 0, "manual__other", 1, None, None), _summary(rng, 0, 300), "success", None
    )
    with engine.begin() as connection:
        connection.execute(sa.insert(dead_letter), log_rows)
    history.engine.dispose()
    return first_day


def _logged(
    rng: random.Random,
    prefix: str,
    status: str,
    detail: str,
    run_id: str,
    at: dt.datetime,
    dag_and_task: tuple[str | None, str | None],
) -> dict:
    return {
        "event_name": "Lead" if prefix == "crm" else "Purchase",
        "event_id": f"{prefix}-{rng.randrange(10**6):06d}-{uuid.uuid4().hex[:4]}",
        "status": status,
        "detail": detail,
        "payload_sha256": uuid.uuid4().hex * 2 if status == "delivered" else None,
        "attempts": 1,
        "first_run_id": run_id,
        "last_run_id": run_id,
        "first_recorded_at": at,
        "last_recorded_at": at,
        "dag_id": dag_and_task[0],
        "task_id": dag_and_task[1],
    }


@pytest.fixture(scope="module")
def gravity_view() -> Iterator[GravityView]:
    """The api-server with the Gravity view over two weeks of seeded history, for one test module."""
    engine = require_server(POSTGRES_URL)
    schema = f"gravity_view_{uuid.uuid4().hex[:8]}"
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    history_table, log_table = f"{schema}.run_history", f"{schema}.delivery_log"
    last_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    home = Path(tempfile.mkdtemp(prefix="gravity-view-airflow-"))
    (home / "dags").mkdir()
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({USERNAME: PASSWORD, READER: READER_PASSWORD}))
    env = {
        "AIRFLOW_CONN_GRAVITY_HISTORY": airflow_uri(POSTGRES_URL),
        "AIRFLOW__GRAVITY__RUN_HISTORY_CONN_ID": "gravity_history",
        "AIRFLOW__GRAVITY__RUN_HISTORY_TABLE": history_table,
        "AIRFLOW__GRAVITY__DELIVERY_LOG_TABLE": log_table,
        "AIRFLOW__CORE__AUTH_MANAGER": "tests.support.one_dag_auth_manager.OneDagAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:viewer,{READER}:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        LIMITS_VARIABLE: f"{READER}:{DAG_ID}",
    }
    try:
        first_day = seed(engine, history_table, log_table, last_day)
        with ApiServerOnly(home, home / "dags", env, startup_timeout=180) as airflow:
            yield GravityView(airflow, engine, history_table, log_table, first_day, last_day)
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()
