"""
Airflow on the CeleryExecutor on this one machine, shared by ``bench_celery.py`` and the Celery test
(``tests/support/celery_deployment.py``); it imports nothing from ``tests/``.

- **Broker**: the local Redis, on a database number of the caller's (``redis://127.0.0.1:6379/7``), flushed
  before use so that no message of an earlier run is delivered.
- **Metadata and results**: a scratch PostgreSQL database; Celery's result backend is the same database
  through ``db+postgresql://`` (Celery cannot use SQLite, and neither can several Airflow processes).
- **Workers**: ``airflow celery worker`` processes, each with its own Celery node name, concurrency and task
  log folder. Several workers share one machine here, where they would not in production, so each reports
  its own name as the hostname Airflow records in ``task_instance.hostname`` (``[core] hostname_callable``).
- **Data**: ``store_transactions`` rows generated in PostgreSQL itself, every row valid, spread evenly over
  whole UTC days, in the schema the example DAGs read.

:class:`CeleryAirflow` starts and stops such a deployment for the benchmark, killing only the processes it
started, by their ids.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import requests
import sqlalchemy as sa

from airflow_provider_gravity.sandbox.launcher import free_loopback_port
from demo.sample_data import postgres_schema_sql

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
#: The environment variable holding a worker's name, which ``worker_hostname`` returns.
WORKER_NAME_ENV = "GRAVITY_CELERY_WORKER_NAME"
HOSTNAME_CALLABLE = "benchmarks.celery_deployment.worker_hostname"
REDIS_URL = "redis://127.0.0.1:6379"
STORE_TABLE = "store_transactions"
#: A pool of customers the generated purchases repeat, as real ones do (the PII cache sees repeats).
CUSTOMERS = 20_000


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the workers: the worker's name, recorded in ``task_instance.hostname``."""
    return os.environ[WORKER_NAME_ENV]


def broker_url(database: int) -> str:
    """The local Redis on database number ``database``."""
    return f"{REDIS_URL}/{database}"


def flush_broker(url: str) -> None:
    """Empty the broker's Redis database, so that no message of an earlier run is delivered.

    :raises redis.ConnectionError: when Redis is not reachable.
    """
    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


def celery_settings(metadata_url: sa.URL, broker: str, slots: int) -> dict[str, str]:
    """
    Airflow settings of a CeleryExecutor deployment, as environment variables.

    :param metadata_url: Airflow's metadata database; Celery's results go to the same database.
    :param broker: the Celery broker URL.
    :param slots: task slots of all workers together. The scheduler queues at most this many tasks, so no
        task waits in Redis for a slot and ``[scheduler] task_queued_timeout`` only ever catches lost messages.
    """
    results = metadata_url.set(drivername="postgresql").render_as_string(hide_password=False)
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(slots),
        "AIRFLOW__CELERY__BROKER_URL": broker,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{results}",
        # One message reserved per free process: a killed worker takes no waiting task down with it.
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
    }


@dataclass(frozen=True)
class CeleryWorker:
    """
    One ``airflow celery worker``.

    :param name: its Celery node name (``NAME@host``) and the hostname its tasks record.
    :param concurrency: task processes (slots).
    """

    name: str
    concurrency: int = 2

    def arguments(self) -> list[str]:
        """The ``airflow`` command line. No log server: on one machine the workers would compete for its port."""
        return [
            "celery",
            "worker",
            "--celery-hostname",
            f"{self.name}@%h",
            "--concurrency",
            str(self.concurrency),
            "--skip-serve-logs",
            "--without-mingle",
            "--without-gossip",
        ]

    def log_folder(self, home: Path) -> Path:
        return home / "logs" / self.name

    def environment(self, home: Path) -> dict[str, str]:
        """What this worker's environment has beyond the deployment's: its name and its task log folder."""
        return {
            WORKER_NAME_ENV: self.name,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE,
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.log_folder(home)),
        }


def create_store_transactions(engine: sa.Engine, first_day: dt.date, days: int, rows_per_day: int) -> int:
    """
    Create the example DAGs' tables (``crm_conversions`` stays empty) and fill ``store_transactions`` with
    ``days × rows_per_day`` valid purchases, ids 1..N, evenly spread over each UTC day from ``first_day``.
    Return the number of rows.
    """
    rows = days * rows_per_day
    insert = f"""
        INSERT INTO {STORE_TABLE} (transaction_id, store_id, purchased_at, loyalty_id, email, phone, first_name,
                                   last_name, country, total, currency, items)
        SELECT n, 'store-' || (n %% 40),
               %(first_day)s::timestamp + ((n - 1) / %(per_day)s) * interval '1 day'
                   + ((n - 1) %% %(per_day)s) * (86399.0 / %(per_day)s) * interval '1 second',
               'loyalty-' || (n %% {CUSTOMERS}),
               'Customer.' || (n %% {CUSTOMERS}) || '@Example.com ',
               '(650) 253-' || lpad((n %% 10000)::text, 4, '0'),
               'Ana-' || (n %% 97), 'Müller', 'US',
               (n %% 500) + 0.99, 'USD',
               '[{{"id":"sku-' || (n %% 300) || '","quantity":1,"item_price":' || ((n %% 500) + 0.99) || '}}]'
        FROM generate_series(1, %(rows)s) AS n
    """
    connection = engine.raw_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(postgres_schema_sql())
            cursor.execute(insert, {"first_day": first_day.isoformat(), "per_day": rows_per_day, "rows": rows})
            cursor.execute(f"ANALYZE {STORE_TABLE}")
        connection.commit()
    finally:
        connection.close()
    return rows


def scratch_database_url(server_url: str, prefix: str) -> sa.URL:
    """A new, empty database on the server of ``server_url``; drop it with :func:`drop_database`."""
    server = sa.make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _autocommit(server, f'CREATE DATABASE "{name}"')
    return server.set(drivername="postgresql+psycopg2", database=name)


def drop_database(url: sa.URL) -> None:
    """Drop a scratch database; FORCE ends the sessions of processes killed mid-query."""
    _autocommit(url.set(database="postgres"), f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


def _autocommit(url: sa.URL, statement: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


class CeleryAirflow:
    """
    A CeleryExecutor deployment for the benchmark: ``with CeleryAirflow(...) as airflow:`` migrates a scratch
    metadata database, starts the api-server, scheduler, dag-processor and ``workers``, and waits until they
    are up; leaving the block stops every process it started, by id, and drops the database.

    :param home: an empty directory to use as ``AIRFLOW_HOME``.
    :param server_url: a PostgreSQL server (SQLAlchemy URL) for the scratch metadata database.
    :param broker_database: the Redis database number of the broker.
    :param workers: the Celery workers.
    :param extra_env: more environment variables of every process (connections, DAG settings).
    """

    def __init__(
        self,
        home: Path,
        server_url: str,
        broker_database: int,
        workers: Sequence[CeleryWorker],
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.home = home
        self.server_url = server_url
        self.broker_database = broker_database
        self.workers = list(workers)
        self.extra_env = dict(extra_env or {})
        self.port = free_loopback_port()
        self.metadata_url: sa.URL | None = None
        self.env: dict[str, str] = {}
        self._processes: dict[str, subprocess.Popen] = {}
        self._metadata: sa.Engine | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> CeleryAirflow:
        self.metadata_url = scratch_database_url(self.server_url, "gravity_bench_airflow")
        try:
            self._metadata = sa.create_engine(self.metadata_url, poolclass=sa.NullPool)
            self.env = self._environment()
            flush_broker(self.env["AIRFLOW__CELERY__BROKER_URL"])
            self.cli("db", "migrate", timeout=300)
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._stop()
        finally:
            if self._metadata is not None:
                self._metadata.dispose()
            drop_database(self.metadata_url)

    def _environment(self) -> dict[str, str]:
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        slots = sum(worker.concurrency for worker in self.workers)
        return {
            **inherited,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_url.render_as_string(hide_password=False),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            **celery_settings(self.metadata_url, broker_url(self.broker_database), slots),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]),
            **self.extra_env,
        }

    def _start(self) -> None:
        self._spawn("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"])
        self._spawn("scheduler", ["scheduler"])
        self._spawn("dag-processor", ["dag-processor"])
        for worker in self.workers:
            self._spawn(worker.name, worker.arguments(), worker.environment(self.home))
        self.wait_until(self._healthy, 240, "the api-server, scheduler and dag-processor to be healthy")
        for worker in self.workers:
            log = self.home / f"{worker.name}.log"
            self.wait_until(lambda log=log: " ready." in log.read_text(errors="replace"), 120, f"{worker.name}")

    def _spawn(self, name: str, arguments: list[str], extra_env: Mapping[str, str] | None = None) -> None:
        with open(self.home / f"{name}.log", "ab") as log_file:
            self._processes[name] = subprocess.Popen(
                [str(VENV_BIN / "airflow"), *arguments],
                cwd=self.home,
                env={**self.env, **(extra_env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its group id is its pid: stopping the group stops its children
            )

    def _stop(self) -> None:
        processes, self._processes = self._processes, {}
        for signum, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            for process in processes.values():
                try:
                    os.killpg(process.pid, signum)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + grace
            for process in processes.values():
                try:
                    process.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    pass

    def _healthy(self) -> bool:
        try:
            health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=2).json()
        except (requests.RequestException, ValueError):
            return False
        parts = ("metadatabase", "scheduler", "dag_processor")
        return all((health.get(part) or {}).get("status") == "healthy" for part in parts)

    def wait_until(self, condition: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
        """Poll ``condition`` until it returns a truthy value; fail when a process exits or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for name, process in self._processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"the {name} exited with code {process.returncode}:\n{self.log_tail(name)}")
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise RuntimeError(f"waited {timeout:g}s for {what}")
            time.sleep(interval)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.home / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"

    def cli(self, *arguments: str, timeout: float = 120.0) -> str:
        """Run ``airflow ARGUMENTS`` in this deployment's environment and return its output."""
        done = subprocess.run(
            [str(VENV_BIN / "airflow"), *arguments],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"`airflow {' '.join(arguments)}` failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def query(self, sql: str, parameters: Iterable[Any] = ()) -> list[sa.RowMapping]:
        """Read the metadata database (psycopg2 placeholders)."""
        with self._metadata.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return list(connection.exec_driver_sql(sql, tuple(parameters)).mappings())
