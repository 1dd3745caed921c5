"""Run the Gravity sandbox as a real subprocess on a free loopback port, for tests and benchmarks.

Uses plain ``requests`` and nothing from the client side of the provider, so tests of the
client against this server exercise two independent readings of the API contract.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_API_KEY = "sandbox-test-key"


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SandboxServer:
    """A sandbox subprocess: ``with SandboxServer() as sandbox: requests.post(sandbox.url + ...)``.

    :param api_key: the key the sandbox accepts (passed through the environment, not argv).
    :param extra_args: more command line options, e.g. ``["--no-store-events"]``.
    :param startup_timeout: seconds to wait for ``/sandbox/stats`` to answer.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        self.api_key = api_key
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._process: subprocess.Popen | None = None
        self._log_file = tempfile.NamedTemporaryFile(prefix="gravity-sandbox-", suffix=".log", delete=False)
        self._http = requests.Session()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:50123`` (POST events to ``url + "/gateway/events"``)."""
        if self.port is None:
            raise RuntimeError("the sandbox is not started")
        return f"http://127.0.0.1:{self.port}"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def start(self) -> SandboxServer:
        self.port = free_loopback_port()
        command = [sys.executable, "-m", "airflow_provider_gravity.sandbox", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), *self.extra_args]
        env = {**os.environ, "GRAVITY_SANDBOX_API_KEY": self.api_key, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"the sandbox exited with code {self._process.returncode} before answering:\n{self.log_tail()}"
                )
            try:
                self._http.get(self.url + "/sandbox/stats", timeout=1).raise_for_status()
                return self
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the sandbox did not answer within {self.startup_timeout:g}s:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self._http.close()
        self._log_file.close()
        Path(self._log_file.name).unlink(missing_ok=True)

    def log_text(self) -> str:
        """Everything the sandbox logged so far."""
        return Path(self._log_file.name).read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, self.url + path, timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/sandbox/stats")

    def events(self, event_name: str | None = None, limit: int | None = None) -> list[dict]:
        params = {key: value for key, value in {"event_name": event_name, "limit": limit}.items() if value}
        return self._call("GET", "/sandbox/events", params=params)["events"]

    def deliveries(self, event_name: str, event_id: str) -> int:
        params = {"event_name": event_name, "event_id": event_id}
        return self._call("GET", "/sandbox/deliveries", params=params)["deliveries"]

    def reset(self) -> None:
        self._call("POST", "/sandbox/reset")

    def faults(self, *specs: dict, replace: bool = True) -> dict:
        """Queue faults for the next requests, e.g. ``faults({"kind": "status", "status": 503})``."""
        return self._call("POST", "/sandbox/faults", json={"faults": list(specs), "replace": replace})

    def advance_clock(self, hours: float = 0, seconds: float = 0) -> float:
        """Move the sandbox clock forward; return its new time (Unix seconds)."""
        return self._call("POST", "/sandbox/clock", json={"advance_seconds": hours * 3600 + seconds})["now"]

    def set_clock(self, epoch: float) -> float:
        return self._call("POST", "/sandbox/clock", json={"set": epoch})["now"]

    def now(self) -> float:
        return self._call("GET", "/sandbox/clock")["now"]


def gravity_connection_json(server: SandboxServer, api_key: str | None = None, **extra: Any) -> str:
    """An Airflow ``gravity`` connection (JSON form, for ``AIRFLOW_CONN_*``) pointing at ``server``."""
    conn = {"conn_type": "gravity", "host": server.url, "password": api_key or server.api_key, "extra": extra}
    return json.dumps(conn)
