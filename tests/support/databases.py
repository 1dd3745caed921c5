"""Real database servers for tests: PostgreSQL must be there under CI=true."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

#: The server the tests seed and check through (psycopg2). The operator does not read through this driver:
#: PostgresHook reads with psycopg 3 (SQLAlchemy 2's ``postgresql+psycopg``), whose loaders differ (it raised
#: ``DataError`` on ``infinity`` dates where psycopg2 gives ``date.max``). A test of what the operator reads goes
#: through :func:`operator_postgres_hook` or the operator itself.
POSTGRES_URL = os.environ.get("GRAVITY_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
#: The SQLAlchemy driver of PostgresHook's engine, which the operator's cursor path reads with.
OPERATOR_POSTGRES_DRIVER = "psycopg"


def require_server(url: str) -> sa.Engine:
    """An engine on a reachable server; fails under ``CI=true`` and skips elsewhere when it is not reachable."""
    engine = sa.create_engine(url)
    try:
        with engine.connect():
            pass
    except OperationalError as error:
        message = f"database not reachable at {engine.url.render_as_string()}: {type(error.orig).__name__}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return engine


def operator_postgres_hook(conn_id: str = "warehouse"):
    """
    The PostgresHook the operator builds for ``conn_id`` (the ``postgres`` fixture's scratch server is
    ``warehouse``), checked to read with :data:`OPERATOR_POSTGRES_DRIVER`: its engine is the one the cursor path
    streams with, so a test reading through it reads as the operator does.
    """
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=conn_id)
    engine = hook.get_sqlalchemy_engine()
    try:
        assert engine.dialect.driver == OPERATOR_POSTGRES_DRIVER, engine.dialect.driver
    finally:
        engine.dispose()
    return hook


def airflow_uri(url: str) -> str:
    """The Airflow connection URI of a SQLAlchemy URL (``postgresql+psycopg2://`` → ``postgres://``)."""
    parsed = sa.make_url(url)
    scheme = {"postgresql": "postgres", "mysql": "mysql", "sqlite": "sqlite"}[parsed.get_backend_name()]
    return parsed.set(drivername=scheme).render_as_string(hide_password=False)


# The delivery log's columns, as documented in the README.
DELIVERY_LOG_COLUMNS = {
    "event_name",
    "event_id",
    "status",
    "detail",
    "payload_sha256",
    "attempts",
    "first_run_id",
    "last_run_id",
    "first_recorded_at",
    "last_recorded_at",
    "dag_id",
    "task_id",
}
