"""A throwaway ``AIRFLOW_HOME`` for the whole test session, set before Airflow is first imported."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="gravity-test-airflow-"))
DAGS_FOLDER = AIRFLOW_HOME / "dags"
REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)

DAGS_FOLDER.mkdir()
(DAGS_FOLDER / "repo_dags").symlink_to(REPO_ROOT / "dags", target_is_directory=True)
os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{AIRFLOW_HOME}/airflow.db"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["PATH"] = VENV_BIN + os.pathsep + os.environ.get("PATH", "")

_STUB = """\
# Stand-in so that dag.test() finds a serialized DAG with this id and these task ids (Airflow 3.1's execution
# API looks the starting task and its upstream tasks up in it); the test runs its own DAG object.
import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG({dag_id!r}, schedule=None, start_date=datetime.datetime(2026, 1, 1)):
    tasks = {{task_id: EmptyOperator(task_id=task_id) for task_id in {upstream!r}}}
    for task_id, upstream_ids in {upstream!r}.items():
        tasks[task_id].set_upstream([tasks[upstream_id] for upstream_id in upstream_ids])
"""


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the metadata database of the session's ``AIRFLOW_HOME`` once; return that home."""
    subprocess.run(
        [str(Path(VENV_BIN) / "airflow"), "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
        timeout=300,
    )
    yield AIRFLOW_HOME
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


def run_dag_test(dag, **test_kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """
    Run ``dag.test()`` for a DAG built inside a test (a stand-in file with its id and its task ids is written
    to the DAGs folder, as ``dag.test()`` needs a serialized DAG) and return the DagRun and each task's XCom
    return value. Needs the ``airflow_db`` fixture.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    stub = DAGS_FOLDER / f"stand_in_{dag.dag_id}.py"
    upstream = {task.task_id: sorted(task.upstream_task_ids) for task in dag.tasks}
    stub_text = _STUB.format(dag_id=dag.dag_id, upstream=upstream)
    if not stub.exists() or stub.read_text() != stub_text:
        stub.write_text(stub_text)
    dag_run = dag.test(**test_kwargs)
    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag.dag_id, run_id=dag_run.run_id, key="return_value")
        returned = {row.task_id: row.value for row in rows}
    return dag_run, returned


def task_states(dag_run) -> dict[str, tuple[str, int]]:
    """``{task_id: (state, try_number)}`` of a finished DagRun."""
    return {ti.task_id: (str(ti.state), ti.try_number) for ti in dag_run.get_task_instances()}


def single_task_dag(dag_id: str, operator_class, **operator_kwargs):
    """A manual DAG holding one task ``send`` of ``operator_class``; retries come without delay."""
    from airflow.sdk import DAG

    operator_kwargs.setdefault("retry_delay", datetime.timedelta(seconds=0))
    with DAG(dag_id, schedule=None, start_date=datetime.datetime(2026, 1, 1), catchup=False) as dag:
        operator_class(task_id="send", **operator_kwargs)
    return dag
