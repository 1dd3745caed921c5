"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sandbox_server import SandboxServer

pytest_plugins = ["tests.airflow_fixtures"]


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
