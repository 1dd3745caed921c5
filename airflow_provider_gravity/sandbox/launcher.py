"""
Run the sandbox in a subprocess on a free loopback port, for your own tests, demos and benchmarks.

.. code-block:: python

    from airflow_provider_gravity.sandbox.launcher import SandboxServer

    with SandboxServer() as sandbox:
        # point a ``gravity`` connection at sandbox.url, with sandbox.api_key as its password
        ...
        assert sandbox.stats()["events_received"] == 3

The sandbox runs as ``python -m airflow_provider_gravity.sandbox`` with the interpreter running this code.
The launcher talks to it with plain :mod:`requests` and imports nothing from the client side of this package,
so tests of the client against it exercise two independent readings of the API contract.
"""

from __future__ import annotations

import os
import secrets
import site
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

__all__ = ["SandboxServer", "free_loopback_port"]

#: The directory that holds the ``airflow_provider_gravity`` package this module was imported from.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
API_KEY_ENV = "GRAVITY_SANDBOX_API_KEY"


def free_loopback_port() -> int:
    """
    Find a TCP port on 127.0.0.1 that was free a moment ago (the system picks it).

    :return: the port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _source_checkout_path() -> list[str]:
    """
    Return the directory to put on the subprocess's ``PYTHONPATH`` so that it imports the same copy of the package as
    this one: none for an installed package (a site directory placed ahead of the standard library could shadow
    it), the checkout's root for a package imported from a source tree.
    """
    site_dirs = [*site.getsitepackages(), site.getusersitepackages()]
    if any(Path(directory).resolve() == PACKAGE_PARENT for directory in site_dirs):
        return []
    return [str(PACKAGE_PARENT)]


class SandboxServer:
    """
    A sandbox subprocess: ``with SandboxServer() as sandbox: requests.post(sandbox.url + ...)``.

    :param api_key: the key the sandbox accepts, passed through the environment (not argv); a random key
        when not given.
    :param extra_args: more command line options of the sandbox, e.g. ``["--no-store-events"]``.
    :param startup_timeout: seconds to wait for ``/sandbox/stats`` to answer.
    :param cwd: working directory of the subprocess (the current one when not given).
    """

    def __init__(
        self,
        api_key: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.api_key = api_key or secrets.token_urlsafe(24)
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.cwd = cwd
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file = tempfile.NamedTemporaryFile(prefix="gravity-sandbox-", suffix=".log", delete=False)
        self._http = requests.Session()

    def __repr__(self) -> str:
        return f"SandboxServer(port={self.port}, api_key=***)"

    @property
    def url(self) -> str:
        """
        The base URL, e.g. ``http://127.0.0.1:50123`` (events go to ``url + "/gateway/events"``).

        :raises RuntimeError: before :meth:`start`.
        """
        if self.port is None:
            raise RuntimeError("the sandbox is not started")
        return f"http://127.0.0.1:{self.port}"

    def auth_headers(self) -> dict[str, str]:
        """Return the header that authenticates a request to the sandbox."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def start(self) -> SandboxServer:
        """
        Start the subprocess and wait until it answers.

        :raises RuntimeError: when it exits or does not answer within ``startup_timeout`` (with its log's tail).
        """
        self.port = free_loopback_port()
        command = [sys.executable, "-m", "airflow_provider_gravity.sandbox", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), *self.extra_args]
        env = {**os.environ, API_KEY_ENV: self.api_key, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [*_source_checkout_path(), env.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            command, cwd=self.cwd, env=env, stdout=self._log_file, stderr=subprocess.STDOUT
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
        """Stop the subprocess (SIGTERM, then SIGKILL after 10 s); nothing happens when it is not running."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process)

    def close(self) -> None:
        """Stop the subprocess and delete its log."""
        self.stop()
        self._http.close()
        self._log_file.close()
        Path(self._log_file.name).unlink(missing_ok=True)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def log_text(self) -> str:
        """Everything the sandbox logged so far."""
        return Path(self._log_file.name).read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of the sandbox's log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, self.url + path, timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        """Fetch the sandbox's counters (``GET /sandbox/stats``)."""
        return self._call("GET", "/sandbox/stats")

    def events(self, event_name: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """
        Fetch the events the sandbox stored, as received (PII hashed).

        :param event_name: only events of this name.
        :param limit: at most this many.
        """
        params = {key: value for key, value in {"event_name": event_name, "limit": limit}.items() if value}
        return self._call("GET", "/sandbox/events", params=params)["events"]

    def deliveries(self, event_name: str, event_id: str) -> int:
        """How many times the event ``(event_name, event_id)`` was accepted."""
        params = {"event_name": event_name, "event_id": event_id}
        return self._call("GET", "/sandbox/deliveries", params=params)["deliveries"]

    def reset(self) -> None:
        """Forget every event, counter and queued fault."""
        self._call("POST", "/sandbox/reset")

    def faults(self, *specs: dict[str, Any], replace: bool = True) -> dict[str, Any]:
        """
        Queue faults for the next requests, e.g. ``faults({"kind": "status", "status": 503})``.

        :param replace: drop the faults queued before (else append to them).
        """
        return self._call("POST", "/sandbox/faults", json={"faults": list(specs), "replace": replace})

    def advance_clock(self, hours: float = 0, seconds: float = 0) -> float:
        """Move the sandbox clock forward; return its new time (Unix seconds)."""
        return self._call("POST", "/sandbox/clock", json={"advance_seconds": hours * 3600 + seconds})["now"]

    def set_clock(self, epoch: float) -> float:
        """Set the sandbox clock to ``epoch`` (Unix seconds); return its new time."""
        return self._call("POST", "/sandbox/clock", json={"set": epoch})["now"]

    def now(self) -> float:
        """Read the sandbox clock (Unix seconds)."""
        return self._call("GET", "/sandbox/clock")["now"]


def stop_process(process: subprocess.Popen[bytes], grace_seconds: float = 10.0) -> None:
    """Stop a subprocess: SIGTERM, then SIGKILL when it has not exited within ``grace_seconds``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace_seconds)
