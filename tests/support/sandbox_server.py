"""The package's sandbox launcher with the tests' defaults, and the connection that points at it.

The launcher itself is product code (:mod:`airflow_provider_gravity.sandbox.launcher`); the tests start it
with a fixed key from the repository root.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow_provider_gravity.sandbox import launcher
from airflow_provider_gravity.sandbox.launcher import free_loopback_port

__all__ = ["DEFAULT_API_KEY", "REPO_ROOT", "SandboxServer", "free_loopback_port", "gravity_connection_json"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_API_KEY = "sandbox-test-key"


class SandboxServer(launcher.SandboxServer):
    """:class:`airflow_provider_gravity.sandbox.launcher.SandboxServer` with the key ``sandbox-test-key``,
    run from the repository root."""

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        cwd: str | os.PathLike[str] | None = REPO_ROOT,
    ) -> None:
        super().__init__(api_key=api_key, extra_args=extra_args, startup_timeout=startup_timeout, cwd=cwd)


def gravity_connection_json(server: launcher.SandboxServer, api_key: str | None = None, **extra: Any) -> str:
    """An Airflow ``gravity`` connection (JSON form, for ``AIRFLOW_CONN_*``) pointing at ``server``."""
    conn = {"conn_type": "gravity", "host": server.url, "password": api_key or server.api_key, "extra": extra}
    return json.dumps(conn)
