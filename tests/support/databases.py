"""Real database servers for tests: PostgreSQL must be there under CI=true."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

POSTGRES_URL = os.environ.get("GRAVITY_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


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
}
