"""Shared pytest fixtures."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import settings

from tests.support.databases import POSTGRES_URL, airflow_uri, require_server
from tests.support.examples import CI_MAX_EXAMPLES
from tests.support.sandbox_server import SandboxServer
from tests.support.warehouse import MARIADB_URL

pytest_plugins = ["tests.support.airflow_fixtures"]

# Hypothesis profiles: "ci" (CI=true) runs each property test with the examples it names, "dev" (elsewhere) a
# tenth of them; HYPOTHESIS_PROFILE=ci runs the full ones locally. A test names its count as
# max_examples=examples(n) (tests/support/examples.py), n scaled by the profile's max_examples over the "ci"
# profile's: a bare max_examples=n would win over any profile.
settings.register_profile("ci", max_examples=CI_MAX_EXAMPLES)
settings.register_profile("dev", max_examples=CI_MAX_EXAMPLES // 10)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev"))


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """One Gravity sandbox subprocess for the whole test session."""
    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> SandboxServer:
    """The session's sandbox, with events, counters, faults and clock reset before the test."""
    sandbox_server.reset()
    return sandbox_server


@pytest.fixture
def postgres(monkeypatch):
    """A scratch schema in the real PostgreSQL, reachable as Airflow connection ``warehouse``."""
    engine = require_server(POSTGRES_URL)
    schema = f"gravity_test_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", airflow_uri(POSTGRES_URL))
    yield engine, schema
    with engine.begin() as conn:
        conn.exec_driver_sql("SET lock_timeout = '20s'")  # a leaked cursor of the operator fails here, not hangs
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    engine.dispose()


@pytest.fixture
def mariadb(monkeypatch):
    """
    A scratch database (utf8mb4) in the real MariaDB, dropped at the end, reachable as the Airflow connection
    ``warehouse_mariadb`` of type ``mysql`` (apache-airflow-providers-mysql, mysqlclient). Yields the
    engine (PyMySQL, for seeding and checking) and the database name.
    """
    server = require_server(MARIADB_URL)
    database = f"gravity_test_{uuid.uuid4().hex[:8]}"
    with server.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
    url = sa.make_url(MARIADB_URL).set(database=database)
    engine = sa.create_engine(url)
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_MARIADB", airflow_uri(url.set(query={}).render_as_string(False)))
    yield engine, database
    engine.dispose()
    with server.begin() as conn:
        conn.exec_driver_sql("SET SESSION lock_wait_timeout = 20")  # a leaked cursor of the operator fails here
        conn.exec_driver_sql(f"DROP DATABASE {database}")
    server.dispose()


DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"


@pytest.fixture
def gravity_window(monkeypatch):
    """The example DAGs' ``gravity_window`` module, imported fresh from ``dags/`` and forgotten after the test."""
    monkeypatch.syspath_prepend(str(DAGS_FOLDER))
    sys.modules.pop("gravity_window", None)
    import gravity_window

    yield gravity_window
    sys.modules.pop("gravity_window", None)
