"""
One DAG run in its own ``airflow dags test`` process, for what Airflow reads from its configuration only when a
process starts (the metrics backend): the test's environment, plus ``extra_env``, on the session's metadata
database.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.airflow_fixtures import DAGS_FOLDER, VENV_BIN

_SINGLE_TASK_DAG = """\
import datetime

from airflow.sdk import DAG

from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator

with DAG({dag_id!r}, schedule=None, start_date=datetime.datetime(2026, 1, 1), catchup=False):
    SendConversionsOperator(task_id="send", retries=0, **{operator_kwargs!r})
"""


def write_single_task_dag(dag_id: str, **operator_kwargs: Any) -> Path:
    """A DAG file in the session's DAGs folder holding one ``send`` task with ``operator_kwargs`` (literals)."""
    path = DAGS_FOLDER / f"{dag_id}.py"
    path.write_text(_SINGLE_TASK_DAG.format(dag_id=dag_id, operator_kwargs=operator_kwargs))
    return path


def run_dag_file(
    dag_file: Path, dag_id: str, extra_env: Mapping[str, str], timeout: float = 240.0
) -> tuple[str, dict[str, Any]]:
    """
    Run ``airflow dags test`` on ``dag_file`` and return the run's state and each task's XCom return value.
    Needs the ``airflow_db`` fixture.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    completed = subprocess.run(
        [str(Path(VENV_BIN) / "airflow"), "dags", "test", dag_id, "--dagfile-path", str(dag_file)],
        env={**os.environ, **extra_env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    with create_session() as session:
        dag_run = session.query(DagRun).filter_by(dag_id=dag_id).order_by(DagRun.id.desc()).first()
        assert dag_run is not None, (
            f"airflow dags test made no run:\n{completed.stdout[-3000:]}{completed.stderr[-3000:]}"
        )
        rows = session.query(XComModel).filter_by(dag_id=dag_id, run_id=dag_run.run_id, key="return_value")
        returned = {row.task_id: row.value for row in rows}
        return str(dag_run.state), returned
