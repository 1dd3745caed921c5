"""A real Airflow for tests: api-server, scheduler and dag-processor subprocesses on a fresh ``AIRFLOW_HOME``.

Its own metadata database, a scratch PostgreSQL database on the server of ``tests.support.databases.POSTGRES_URL``
(created on enter, dropped on exit), the LocalExecutor, and nothing inherited from the ``AIRFLOW_*``
variables of the test session. Not SQLite: with several processes writing at once, SQLite answers a read
transaction that must become a write transaction with "database is locked" at once, whatever its busy
timeout. Every process is started in its own session, so that stopping it (SIGTERM, then SIGKILL) also
stops the executor workers and task processes it spawned.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil
import requests
import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from tests.support.databases import POSTGRES_URL, require_server
from tests.support.sandbox_server import free_loopback_port

VENV_BIN = Path(sys.executable).parent
REPO_ROOT = Path(__file__).resolve().parents[2]
PROCESS_COMMANDS: dict[str, list[str]] = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--workers", "1"],
    "scheduler": ["scheduler"],
    "dag-processor": ["dag-processor"],
}
#: Health components that must report ``healthy`` before the deployment is ready.
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "dag_processor")
UNFINISHED_RUN_STATES = frozenset({"queued", "running"})
#: Task states that mean a run will not succeed in the time a test waits (retries are minutes apart).
FAILED_TASK_STATES = frozenset({"failed", "up_for_retry", "upstream_failed"})

_T = TypeVar("_T")


class AirflowProcessError(RuntimeError):
    """Airflow did not do what the test waited for; the message holds the process and task log tails."""


class AirflowProcesses:
    """
    Airflow's api-server, scheduler and dag-processor as subprocesses, for end-to-end tests.

    Use it as a context manager: ``__enter__`` creates and migrates the metadata database and starts the
    processes, ``__exit__`` stops them by their process ids and then drops the database, even when the test
    failed. Under ``CI=true`` an unreachable PostgreSQL server fails the test; elsewhere it skips it.

    :param home: an empty directory to use as ``AIRFLOW_HOME``.
    :param dags_folder: the DAGs folder the dag-processor parses.
    :param extra_env: more environment variables of every process (connections, DAG settings).
    :param parallelism: task slots of the LocalExecutor.
    :param startup_timeout: seconds to wait for the processes to report healthy.
    """

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        extra_env: Mapping[str, str] | None = None,
        *,
        parallelism: int = 2,
        startup_timeout: float = 120.0,
    ) -> None:
        self.home = home
        self.dags_folder = dags_folder
        self.startup_timeout = startup_timeout
        self.port = free_loopback_port()
        self.metadata_db = f"gravity_airflow_{uuid.uuid4().hex}"
        self.metadata_url = sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg2", database=self.metadata_db)
        self._server: sa.Engine | None = None
        self._metadata: sa.Engine | None = None
        self.process_logs = {name: home / f"{name}.log" for name in PROCESS_COMMANDS}
        self._processes: dict[str, subprocess.Popen] = {}
        self.env = self._environment(extra_env or {}, parallelism)

    @property
    def url(self) -> str:
        """Base URL of the api-server."""
        return f"http://127.0.0.1:{self.port}"

    def _environment(self, extra_env: Mapping[str, str], parallelism: int) -> dict[str, str]:
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        settings = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_url.render_as_string(hide_password=False),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__PORT": str(self.port),
            # Parse once at start; re-parsing every 30 s would only compete with the tasks for 2 cores.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]),
            "PYTHONUNBUFFERED": "1",
        }
        return {**inherited, **settings, **extra_env}

    def __enter__(self) -> AirflowProcesses:
        self._create_database()
        try:
            self.cli("db", "migrate", timeout=180)
            self.start()
        except BaseException:
            try:
                self.stop()
            finally:
                self._drop_database()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is not None and not issubclass(exc_type, AirflowProcessError):
            print(self.diagnostics())  # pytest shows it with the failure
        try:
            self.stop()
        finally:
            self._drop_database()

    # -- metadata database --------------------------------------------------------------------------

    def _create_database(self) -> None:
        """Create the scratch metadata database (fails under ``CI=true``, else skips, without a server)."""
        self._server = require_server(POSTGRES_URL)  # the scratch database does not exist yet
        with self._server.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{self.metadata_db}"')
        # Timestamps in UTC whatever the server's time zone, as Airflow stores and the tests compare them.
        utc = {"options": "-c timezone=UTC"}
        self._metadata = sa.create_engine(self.metadata_url, poolclass=sa.NullPool, connect_args=utc)

    def _drop_database(self) -> None:
        """Drop the scratch metadata database; FORCE ends the sessions of processes that outlived ``stop``."""
        server, self._server = self._server, None
        metadata, self._metadata = self._metadata, None
        if server is None:
            return
        if metadata is not None:
            metadata.dispose()
        try:
            with server.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.metadata_db}" WITH (FORCE)')
        finally:
            server.dispose()

    # -- processes ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the processes and wait until the api-server reports all of them healthy."""
        for name, arguments in PROCESS_COMMANDS.items():
            if name == "api-server":
                arguments = [*arguments, "--port", str(self.port)]
            self.start_process(name, arguments)
        self.wait_until(self._healthy, self.startup_timeout, "the api-server to report every component healthy")

    def start_process(
        self, name: str, arguments: Sequence[str], extra_env: Mapping[str, str] | None = None
    ) -> subprocess.Popen:
        """
        Start ``airflow ARGUMENTS`` as one more process of this deployment, logging to ``<home>/<name>.log``;
        ``stop`` stops it with the others.

        :param name: unique among this deployment's processes (``celery-worker-a``).
        :param extra_env: environment variables of this process only, over the deployment's.
        """
        if name in self._processes:
            raise AirflowProcessError(f"a process named {name} is already running")
        self.process_logs.setdefault(name, self.home / f"{name}.log")
        with open(self.process_logs[name], "ab") as log_file:
            self._processes[name] = subprocess.Popen(
                [str(VENV_BIN / "airflow"), *arguments],
                cwd=self.home,
                env={**self.env, **(extra_env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self._processes[name]

    def kill_process(self, name: str) -> list[int]:
        """
        SIGKILL one process of this deployment and its children, as a crashed machine would end them, and
        forget it (its exit is then no failure of the deployment). Return the ids of the processes killed.
        """
        process = self._processes.pop(name)
        descendants = _descendants(process.pid)
        _signal_group(process.pid, signal.SIGKILL)
        for child in descendants:  # a child that started a session of its own left the group
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        process.wait(timeout=30)
        return [process.pid, *(child.pid for child in descendants)]

    def _healthy(self) -> bool:
        try:
            health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=2).json()
        except (requests.RequestException, ValueError):
            return False
        return all((health.get(part) or {}).get("status") == "healthy" for part in HEALTH_COMPONENTS)

    def stop(self, grace_seconds: float = 20.0) -> None:
        """Stop every process this object started, with its children: SIGTERM, then SIGKILL."""
        processes, self._processes = self._processes, {}
        descendants = [child for process in processes.values() for child in _descendants(process.pid)]
        for process in processes.values():
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for process in processes.values():
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        for process in processes.values():
            _signal_group(process.pid, signal.SIGKILL)  # also executor workers that outlived their parent
            if process.poll() is None:
                process.wait(timeout=10)
        for child in descendants:  # task processes may have left the group with a session of their own
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass

    def _check_alive(self) -> None:
        for name, process in self._processes.items():
            if process.poll() is not None:
                raise AirflowProcessError(f"the {name} exited with code {process.returncode}\n{self.diagnostics()}")

    def wait_until(
        self,
        condition: Callable[[], _T],
        timeout: float,
        what: str,
        interval: float = 1.0,
        progress: Callable[[], str] | None = None,
    ) -> _T:
        """
        Poll ``condition`` until it returns a truthy value, at most ``timeout`` seconds; return that value.
        On timeout, raise with ``progress()`` (where things stand) and the logs.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                where = f"\n{progress()}" if progress else ""
                raise AirflowProcessError(f"waited {timeout:g}s for {what}{where}\n{self.diagnostics()}")
            time.sleep(interval)

    # -- commands and metadata ----------------------------------------------------------------------

    def cli(self, *arguments: str, timeout: float = 90.0) -> str:
        """Run ``airflow ARGUMENTS`` in this deployment's environment; return its output, raise if it fails."""
        try:
            done = subprocess.run(
                [str(VENV_BIN / "airflow"), *arguments],
                cwd=self.home,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as error:
            raise AirflowProcessError(f"`airflow {' '.join(arguments)}` took more than {timeout:g}s") from error
        if done.returncode != 0:
            raise AirflowProcessError(
                f"`airflow {' '.join(arguments)}` exited with code {done.returncode}:\n"
                f"{_tail(done.stdout)}\n{_tail(done.stderr)}"
            )
        return done.stdout

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[RowMapping]:
        """
        Read the metadata database: ``sql`` takes psycopg2's ``%s`` placeholders (a literal ``%`` is ``%%``)
        and the rows are indexed by column name. Autocommit in a read-only session: no transaction is held
        open between polls, and no write of the processes ever waits for a test's read.
        """
        if self._metadata is None:
            raise AirflowProcessError("the metadata database exists only inside the `with AirflowProcesses(...)` block")
        options = {"isolation_level": "AUTOCOMMIT", "postgresql_readonly": True}
        with self._metadata.connect().execution_options(**options) as connection:
            return list(connection.exec_driver_sql(sql, tuple(parameters)).mappings())

    def wait_for_dag(self, dag_id: str, timeout: float = 90.0) -> None:
        """
        Wait until the dag-processor has serialized ``dag_id``. Fails at once when the file named after the
        DAG (``<dag_id>.py``) does not import, and lists every import error when the wait times out.
        """

        def parsed() -> bool:
            if self.query("SELECT 1 FROM serialized_dag WHERE dag_id = %s", (dag_id,)):
                return True
            for error in self._import_errors():
                if Path(error["filename"]).name == f"{dag_id}.py":
                    raise AirflowProcessError(f"{error['filename']} does not import:\n{error['stacktrace']}")
            return False

        try:
            self.wait_until(parsed, timeout, f"the dag-processor to parse {dag_id}")
        except AirflowProcessError as error:
            listed = "\n".join(f"{row['filename']}:\n{row['stacktrace']}" for row in self._import_errors())
            if listed:
                raise AirflowProcessError(f"{error}\nimport errors:\n{listed}") from None
            raise

    def _import_errors(self) -> list[RowMapping]:
        return self.query("SELECT filename, stacktrace FROM import_error")

    def create_backfill(self, dag_id: str, from_date: str, to_date: str, *options: str) -> int:
        """``airflow backfill create``; return the new backfill's id."""
        before = self.latest_backfill_id(dag_id)
        self.cli("backfill", "create", "--dag-id", dag_id, "--from-date", from_date, "--to-date", to_date, *options)
        backfill_id = self.latest_backfill_id(dag_id)
        if backfill_id is None or backfill_id == before:
            raise AirflowProcessError(f"`airflow backfill create` created no backfill of {dag_id}")
        return backfill_id

    def latest_backfill_id(self, dag_id: str) -> int | None:
        rows = self.query("SELECT max(id) AS id FROM backfill WHERE dag_id = %s", (dag_id,))
        return rows[0]["id"]

    def backfill_runs(self, backfill_id: int) -> list[RowMapping]:
        """The DAG runs of a backfill, oldest interval first."""
        return self.query(
            "SELECT run_id, state, data_interval_start, data_interval_end FROM dag_run "
            "WHERE backfill_id = %s ORDER BY data_interval_start",
            (backfill_id,),
        )

    def wait_for_backfill_runs(
        self,
        backfill_id: int,
        expected_runs: int,
        timeout: float,
        failed_states: Collection[str] = FAILED_TASK_STATES,
    ) -> list[RowMapping]:
        """
        Wait until the backfill's runs have all finished; fail at once when a task reaches one of
        ``failed_states`` (by default: fails or must retry).
        """

        def finished() -> list[RowMapping] | None:
            runs = self.backfill_runs(backfill_id)
            troubled = self.query(
                "SELECT ti.run_id, ti.task_id, ti.state FROM task_instance ti JOIN dag_run dr "
                "ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id WHERE dr.backfill_id = %s "
                "AND ti.state = ANY(%s)",
                (backfill_id, sorted(failed_states)),
            )
            if troubled:
                listed = ", ".join(f"{row['run_id']}/{row['task_id']}: {row['state']}" for row in troubled)
                raise AirflowProcessError(f"tasks of backfill {backfill_id} failed: {listed}\n{self.diagnostics()}")
            if len(runs) == expected_runs and not any(row["state"] in UNFINISHED_RUN_STATES for row in runs):
                return runs
            return None

        def states() -> str:
            rows = self.query(
                "SELECT dr.run_id, dr.state AS run_state, ti.task_id, ti.state FROM dag_run dr LEFT JOIN "
                "task_instance ti ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id WHERE dr.backfill_id = %s "
                "ORDER BY dr.run_id, ti.task_id",
                (backfill_id,),
            )
            return "\n".join(f"{row['run_id']} ({row['run_state']}): {row['task_id']} {row['state']}" for row in rows)

        return self.wait_until(
            finished, timeout, f"the {expected_runs} runs of backfill {backfill_id} to finish", progress=states
        )

    def wait_for_backfill_completed(self, backfill_id: int, timeout: float = 75.0) -> None:
        """Wait for the scheduler to mark a backfill completed (a 30-second timer after its runs end)."""
        self.wait_until(
            lambda: self.query("SELECT completed_at FROM backfill WHERE id = %s", (backfill_id,))[0]["completed_at"],
            timeout,
            f"the scheduler to mark backfill {backfill_id} completed",
        )

    def return_values(self, dag_id: str, run_ids: Sequence[str]) -> dict[tuple[str, str], Any]:
        """``{(run_id, task_id): XCom return value}`` of the given runs."""
        rows = self.query(
            "SELECT run_id, task_id, value FROM xcom WHERE dag_id = %s AND key = 'return_value' AND run_id = ANY(%s)",
            (dag_id, list(run_ids)),
        )
        return {(row["run_id"], row["task_id"]): _json_value(row["value"]) for row in rows}

    # -- diagnostics --------------------------------------------------------------------------------

    def diagnostics(self, lines: int = 40) -> str:
        """The tails of the process logs and of the latest task logs, to read when a test fails."""
        parts = []
        for name, path in self.process_logs.items():
            parts.append(f"----- {name} log ({path}) -----\n{_tail_file(path, lines)}")
        task_logs = sorted((self.home / "logs").glob("dag_id=*/**/*.log"), key=lambda path: path.stat().st_mtime)
        for path in task_logs[-12:]:
            parts.append(f"----- task log {path.relative_to(self.home)} -----\n{_tail_file(path, lines)}")
        return "\n".join(parts)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)  # the process was started in its own session: its group id is its pid
    except (ProcessLookupError, PermissionError):
        pass


def _json_value(value: Any) -> Any:
    while isinstance(value, str | bytes):  # stored as JSON text, sometimes JSON inside a JSON string
        try:
            value = json.loads(value)
        except ValueError:
            break
    return value


def _tail(text: str, lines: int = 40, line_length: int = 600) -> str:
    return "\n".join(line[:line_length] for line in text.splitlines()[-lines:])


def _tail_file(path: Path, lines: int) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except FileNotFoundError:
        return "(no log)"
