"""The package as it would be published: build the sdist and the wheel, check what they hold, then install
the wheel into a clean venv (with Airflow at this venv's version and the SQLite provider, resolved from PyPI
by uv, as a user would) and run the example DAG from it against the sandbox, with a fresh ``AIRFLOW_HOME``.

Nothing of the repository is importable in that venv: it sees the installed wheel only, so a module, a data
file or a dependency missing from the package fails here. Needs ``uv`` (beside this venv's python, as
``make install`` puts it) and the package registry; a missing one fails the test, it is never skipped.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Mapping
from email.parser import HeaderParser
from pathlib import Path

import pytest

from airflow_provider_gravity import __version__
from demo.run_demo import run_summaries
from demo.sample_data import CRM_TABLE, STORE_TABLE, SampleConfig, generate, write_sqlite
from tests.support.sandbox_server import SandboxServer, gravity_connection_json

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "airflow_provider_gravity"
DIST_NAME = "airflow-provider-gravity"
DAG_ID = "gravity_offline_conversions"
TASK_TABLES = {"send_crm_conversions": CRM_TABLE, "send_store_purchases": STORE_TABLE}
AIRFLOW_VERSION = importlib.metadata.version("apache-airflow")
#: Small, so that the DAG run is quick; the sandbox must receive every valid row of one day of it.
SAMPLE = SampleConfig(days=3, crm_rows_per_day=200, store_rows_per_day=300, start=dt.date(2025, 6, 2), seed=11)
#: Modules the provider needs at run time: the hook and operator Airflow loads, the phone metadata fast path
#: (built from phonenumbers' metadata when it is first used), and the sandbox (``python -m ...sandbox``).
REQUIRED_WHEEL_FILES = (
    f"{PACKAGE}/__init__.py",
    f"{PACKAGE}/py.typed",
    f"{PACKAGE}/hooks/gravity.py",
    f"{PACKAGE}/operators/send_conversions.py",
    f"{PACKAGE}/conversions/pii/phones.py",
    f"{PACKAGE}/conversions/pii/phone_metadata_path.py",
    f"{PACKAGE}/sandbox/__init__.py",
    f"{PACKAGE}/sandbox/__main__.py",
    f"{PACKAGE}/sandbox/app.py",
)


def find_uv() -> str:
    """The uv of this venv (``make install`` installs it there), else one on PATH; fail if there is none."""
    beside_python = Path(sys.executable).parent / "uv"
    uv = str(beside_python) if beside_python.exists() else shutil.which("uv")
    if uv is None:
        pytest.fail(
            f"uv is needed to build and install the wheel: not beside {sys.executable} nor on PATH "
            "(run `make install`, or `pip install uv`)"
        )
    return uv


def run(
    command: list[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    what: str | None = None,
) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output when it fails or takes too long."""
    what = what or " ".join(Path(command[0]).name if i == 0 else part for i, part in enumerate(command))
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    except subprocess.TimeoutExpired as error:
        output = (error.stdout or b"")[-4000:], (error.stderr or b"")[-4000:]
        pytest.fail(f"`{what}` did not finish within {timeout:g} s:\n{output[0]!r}\n{output[1]!r}")
    if completed.returncode != 0:
        pytest.fail(
            f"`{what}` failed (exit {completed.returncode}):\n"
            f"--- stdout (tail)\n{completed.stdout[-6000:]}\n--- stderr (tail)\n{completed.stderr[-6000:]}"
        )
    return completed


def isolated_env(venv: Path, **extra: str) -> dict[str, str]:
    """This process's environment without anything that points at the repository or its venv or Airflow home."""
    own_bin = str(Path(sys.executable).parent)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AIRFLOW") and key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    }
    path = [entry for entry in env.get("PATH", "").split(os.pathsep) if entry and entry != own_bin]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    env["VIRTUAL_ENV"] = str(venv)
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel built from this checkout (the wheel from the sdist, as ``python -m build`` does)."""
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    run([find_uv(), "build", "--out-dir", str(out), str(REPO_ROOT)], timeout=300, cwd=REPO_ROOT, what="uv build")
    print(f"\nbuilt the sdist and the wheel in {time.monotonic() - started:.1f} s")
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_wheel_holds_the_package_and_nothing_else(built):
    wheel = built["wheel"]
    assert wheel.name == f"{PACKAGE}-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = f"{PACKAGE}-{__version__}.dist-info"
        metadata = HeaderParser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()

    missing = [name for name in REQUIRED_WHEEL_FILES if name not in names]
    assert not missing, f"the wheel lacks {missing}"
    foreign = [name for name in names if not name.startswith((f"{PACKAGE}/", f"{dist_info}/"))]
    assert not foreign, f"the wheel carries files outside the package: {foreign}"
    junk = [name for name in names if "__pycache__" in name or name.endswith((".pyc", ".pyo", ".orig", ".rej"))]
    assert not junk, junk

    assert metadata["Name"] == DIST_NAME and metadata["Version"] == __version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Requires-Python"] == ">=3.11"
    requires = metadata.get_all("Requires-Dist")
    assert any(req.startswith("apache-airflow<4,>=3.1") or req.startswith("apache-airflow>=3.1") for req in requires)
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "[apache_airflow_provider]" in entry_points
    assert f"provider_info = {PACKAGE}:get_provider_info" in entry_points


def test_sdist_holds_the_sources_and_the_documents(built):
    sdist = built["sdist"]
    root = f"{PACKAGE}-{__version__}"
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(f"{root}/") for name in archive.getnames()}
    documents = ["README.md", "CHANGELOG.md", "pyproject.toml", "PKG-INFO"]
    documents += [path.name for path in REPO_ROOT.glob("LICENSE*")] + [path.name for path in REPO_ROOT.glob("NOTICE*")]
    missing = [name for name in documents + list(REQUIRED_WHEEL_FILES) if name not in names]
    assert not missing, f"the sdist lacks {missing}"
    junk = sorted(
        name
        for name in names
        if name.split("/")[0]
        in {".venv", "dist", "build", ".git", ".pytest_cache", ".hypothesis", ".ruff_cache", ".airflow-demo"}
        or name.split("/")[0].startswith(".venv")
        or "__pycache__" in name
        or name.endswith(".pyc")
    )
    assert not junk, f"the sdist carries build or cache files: {junk[:20]}"


@pytest.fixture(scope="module")
def clean_venv(built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv holding only the wheel, apache-airflow at this venv's version and the SQLite provider."""
    uv = find_uv()
    venv = tmp_path_factory.mktemp("clean-venv") / "venv"
    started = time.monotonic()
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120, what="python -m venv")
    env = isolated_env(venv, UV_LINK_MODE=os.environ.get("UV_LINK_MODE", "copy"))
    run(
        [
            uv,
            "pip",
            "install",
            "--python",
            str(venv / "bin" / "python"),
            str(built["wheel"]),
            f"apache-airflow=={AIRFLOW_VERSION}",
            "apache-airflow-providers-sqlite",
        ],
        timeout=600,
        env=env,
        cwd=venv.parent,
        what="uv pip install <wheel> apache-airflow providers-sqlite",
    )
    print(f"\ncreated the clean venv and installed into it in {time.monotonic() - started:.1f} s")
    return venv


@pytest.mark.slow
def test_installed_wheel_runs_the_example_dag_against_the_sandbox(clean_venv, tmp_path):
    venv_bin = clean_venv / "bin"
    home = tmp_path / "airflow-home"
    shutil.copytree(REPO_ROOT / "dags", home / "dags", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = isolated_env(
        clean_venv,
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
    )
    airflow = str(venv_bin / "airflow")

    # The provider is the installed wheel, not this checkout, and its sandbox starts from it.
    probe = run(
        [
            str(venv_bin / "python"),
            "-c",
            "import airflow, airflow_provider_gravity as p; print(airflow.__version__, p.__version__, p.__file__)",
        ],
        timeout=120,
        env=env,
        cwd=tmp_path,
        what="import airflow_provider_gravity",
    )
    airflow_version, version, location = probe.stdout.split()
    assert (airflow_version, version) == (AIRFLOW_VERSION, __version__)
    assert Path(location).is_relative_to(clean_venv), f"imported from {location}, not from the clean venv"
    sandbox_help = run(
        [str(venv_bin / "python"), "-m", f"{PACKAGE}.sandbox", "--help"],
        timeout=120,
        env=env,
        cwd=tmp_path,
        what=f"python -m {PACKAGE}.sandbox --help",
    )
    assert "/gateway/events" in sandbox_help.stdout

    providers = run([airflow, "providers", "list"], timeout=300, env=env, cwd=tmp_path, what="airflow providers list")
    listed = [line.split() for line in providers.stdout.splitlines() if DIST_NAME in line]
    assert listed, f"{DIST_NAME} not in `airflow providers list`:\n{providers.stdout}\n{providers.stderr}"
    assert __version__ in listed[0], listed[0]
    assert "apache-airflow-providers-sqlite" in providers.stdout

    run([airflow, "db", "migrate"], timeout=300, env=env, cwd=tmp_path, what="airflow db migrate")
    write_sqlite(home / "warehouse.db", SAMPLE)
    # The second seeded day: the interval that ends at 03:00 UTC the day after it (schedule 0 3 * * *).
    start = dt.datetime.combine(SAMPLE.start + dt.timedelta(days=1), dt.time(3))
    end = start + dt.timedelta(days=1)
    expected_ids = window_event_ids(start, end)

    with SandboxServer() as sandbox:
        env["AIRFLOW_CONN_GRAVITY_DEFAULT"] = gravity_connection_json(sandbox)
        env["AIRFLOW_CONN_GRAVITY_WAREHOUSE"] = json.dumps({"conn_type": "sqlite", "host": str(home / "warehouse.db")})
        run(
            # The exact interval: the DAG's default lookback would read the first seeded day too.
            [airflow, "dags", "test", DAG_ID, f"{end.isoformat()}+00:00", "--conf", '{"lookback_days": 0}'],
            timeout=600,
            env=env,
            cwd=tmp_path,
            what=f"airflow dags test {DAG_ID}",
        )
        stats = sandbox.stats()
        events = sandbox.events()

    _, summaries = run_summaries(home)
    assert set(summaries) == set(TASK_TABLES), summaries
    received = {}
    for event in events:
        received.setdefault(event["event_id"].split("-")[0], set()).add(event["event_id"])
    for task_id, table in TASK_TABLES.items():
        summary, ids = summaries[task_id], expected_ids[table]
        assert summary["rows_read"] == len(ids), (task_id, summary)
        assert summary["delivered"] + summary["invalid"] == summary["rows_read"], (task_id, summary)
        assert summary["delivered"] > 0.9 * summary["rows_read"], (task_id, summary)
        assert summary["undelivered"] == summary["rejected"] == summary["duplicate"] == 0, (task_id, summary)
        sent = received.get("crm" if table == CRM_TABLE else "pos", set())
        assert len(sent) == summary["delivered"] and sent <= ids, (task_id, len(sent), summary)
    assert stats["events_received"] == len(events) == sum(s["delivered"] for s in summaries.values()), stats
    assert stats["plaintext_pii_seen"] == 0, stats
    assert stats["max_deliveries_of_one_event"] == 1, stats


def window_event_ids(start: dt.datetime, end: dt.datetime) -> dict[str, set[str]]:
    """The event ids of each table's rows in ``[start, end)``, from the generated rows rather than SQL."""
    low, high = start.strftime("%Y-%m-%d %H:%M:%S"), end.strftime("%Y-%m-%d %H:%M:%S")
    prefixes = {CRM_TABLE: "crm-", STORE_TABLE: "pos-"}
    return {
        table: {f"{prefixes[table]}{row[0]}" for row in rows if row[2] is not None and low <= row[2] < high}
        for table, rows in generate(SAMPLE).items()
    }
