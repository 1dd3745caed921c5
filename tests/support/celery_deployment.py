"""
A real CeleryExecutor deployment for tests: :class:`~tests.support.airflow_processes.AirflowProcesses` (api-server,
scheduler, dag-processor, scratch PostgreSQL metadata database) on the CeleryExecutor, plus ``airflow celery
worker`` processes, with Redis as the broker and the metadata database as Celery's result backend. The Celery
pieces are ``benchmarks/celery_deployment.py``'s, which ``make bench-celery`` runs too.

Failure handling is tuned for a test that kills a worker: a task without a heartbeat for
``heartbeat_timeout`` seconds is failed by the scheduler and retried after ``retry_delay`` (a cluster policy in
``AIRFLOW_HOME/config/airflow_local_settings.py`` shortens the DAGs' minutes-long retry delay; it changes
nothing else of the tasks).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from benchmarks.celery_deployment import CeleryWorker, broker_url, celery_settings, flush_broker
from tests.support.airflow_processes import AirflowProcesses, _json_value, _tail_file

#: The deployment's cluster policy: only the retry delay of every task changes.
_RETRY_POLICY = """\
import datetime


def task_policy(task):
    task.retry_delay = datetime.timedelta(seconds={seconds!r})
"""


def require_redis(url: str) -> None:
    """Fail under ``CI=true``, else skip, when the Redis of ``url`` does not answer; empty its database."""
    try:
        flush_broker(url)
    except redis.RedisError as error:
        message = f"Redis not reachable at {url}: {type(error).__name__}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


class CeleryDeployment(AirflowProcesses):
    """
    Airflow on the CeleryExecutor with the given workers; a context manager like ``AirflowProcesses``, whose
    ``__exit__`` stops the workers too (by process id, with their children).

    :param home: an empty directory to use as ``AIRFLOW_HOME``.
    :param dags_folder: the DAGs folder the dag-processor parses.
    :param workers: the Celery workers; the scheduler queues at most their slots together.
    :param extra_env: more environment variables of every process (connections, DAG settings).
    :param broker_database: the Redis database number of the broker, emptied on enter.
    :param heartbeat_timeout: seconds without a task heartbeat after which the scheduler fails the task.
    :param retry_delay: seconds before a failed task's retry is queued.
    """

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        workers: Sequence[CeleryWorker],
        extra_env: Mapping[str, str] | None = None,
        *,
        broker_database: int = 7,
        heartbeat_timeout: int = 20,
        retry_delay: float = 3.0,
        startup_timeout: float = 240.0,
    ) -> None:
        self.workers = {worker.name: worker for worker in workers}
        self.retry_delay = retry_delay
        self.broker_url = broker_url(broker_database)
        super().__init__(home, dags_folder, extra_env, startup_timeout=startup_timeout)
        slots = sum(worker.concurrency for worker in workers)
        self.env.update(celery_settings(self.metadata_url, self.broker_url, slots))
        self.env.update(
            {
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(heartbeat_timeout),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                # A task whose Celery message died with a worker before it started is queued again after this.
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "150",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "15",
            }
        )
        self.env.update(extra_env or {})

    def __enter__(self) -> CeleryDeployment:
        require_redis(self.broker_url)
        config = self.home / "config"
        config.mkdir(exist_ok=True)
        (config / "airflow_local_settings.py").write_text(_RETRY_POLICY.format(seconds=self.retry_delay))
        super().__enter__()
        return self

    def start(self) -> None:
        """Start the api-server, scheduler, dag-processor and workers; wait until each worker is ready."""
        super().start()
        for worker in self.workers.values():
            self.start_process(worker.name, worker.arguments(), worker.environment(self.home))
        for worker in self.workers.values():
            log = self.process_logs[worker.name]
            self.wait_until(lambda log=log: " ready." in log.read_text(errors="replace"), 120, f"{worker.name}")

    def kill_worker(self, name: str) -> list[int]:
        """SIGKILL a worker with its pool and task processes; return their ids."""
        return self.kill_process(name)

    def mapped_return_values(self, dag_id: str, run_ids: Sequence[str]) -> dict[tuple[str, str, int], Any]:
        """``{(run_id, task_id, map_index): XCom return value}`` of the given runs."""
        rows = self.query(
            "SELECT run_id, task_id, map_index, value FROM xcom "
            "WHERE dag_id = %s AND key = 'return_value' AND run_id = ANY(%s)",
            (dag_id, list(run_ids)),
        )
        return {(row["run_id"], row["task_id"], row["map_index"]): _json_value(row["value"]) for row in rows}

    def task_tries(self, dag_id: str) -> list[Any]:
        """Every try of every task of ``dag_id``: the earlier ones (history) and the last one."""
        columns = "run_id, task_id, map_index, try_number, state, hostname, start_date, end_date"
        return self.query(
            f"SELECT {columns} FROM task_instance_history WHERE dag_id = %s UNION ALL "
            f"SELECT {columns} FROM task_instance WHERE dag_id = %s ORDER BY start_date NULLS LAST",
            (dag_id, dag_id),
        )

    def diagnostics(self, lines: int = 40) -> str:
        """The process logs, then the latest task logs of each worker."""
        parts = [super().diagnostics(lines)]
        for worker in self.workers.values():
            folder = worker.log_folder(self.home)
            logs = sorted(folder.glob("dag_id=*/**/*.log"), key=lambda path: path.stat().st_mtime)
            for path in logs[-4:]:
                parts.append(
                    f"----- {worker.name} task log {path.relative_to(folder)} -----\n{_tail_file(path, lines)}"
                )
        return "\n".join(parts)
