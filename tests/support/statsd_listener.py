"""A StatsD server for tests: a UDP socket on loopback that keeps every metric line it receives."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class StatsdLine:
    """
    One metric as StatsD carries it: ``name[,tag=value...]:value|type``.

    :param name: the metric's name, with the prefix and without the tags.
    :param tags: the InfluxDB-style tags (``statsd_influxdb_enabled``), empty when the line has none.
    :param value: the number sent.
    :param kind: ``c`` (counter), ``g`` (gauge), ``ms`` (timer), ...
    """

    name: str
    tags: dict[str, str]
    value: float
    kind: str

    @classmethod
    def parse(cls, text: str) -> StatsdLine:
        head, _, rest = text.partition(":")
        value, _, kind = rest.partition("|")
        name, *tag_parts = head.split(",")
        tags = dict(part.split("=", 1) for part in tag_parts)
        return cls(name, tags, float(value), kind.split("|")[0])


class StatsdListener:
    """
    Listens on ``127.0.0.1`` on a free UDP port until closed; ``lines`` holds what arrived, in order.

    Use it as a context manager.
    """

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self.lines: list[StatsdLine] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="statsd-listener", daemon=True)

    def __enter__(self) -> StatsdListener:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def _receive(self) -> None:
        while not self._closing.is_set():
            try:
                datagram = self._socket.recv(65_535)
            except TimeoutError:
                continue
            # A client may pipeline several metrics in one datagram, one a line.
            self.lines.extend(StatsdLine.parse(text) for text in datagram.decode().splitlines() if text)

    def wait_for(self, name: str, timeout: float = 10.0) -> None:
        """Wait until a line named ``name`` arrived (UDP gives no delivery receipt)."""
        deadline = time.monotonic() + timeout
        while not any(line.name == name for line in self.lines):
            if time.monotonic() > deadline:
                raise AssertionError(f"No StatsD metric {name!r} within {timeout} s; got {self.names()}.")
            time.sleep(0.05)

    def names(self) -> set[str]:
        """The names of every line received."""
        return {line.name for line in self.lines}

    def named(self, prefix: str) -> list[StatsdLine]:
        """The lines whose names start with ``prefix``."""
        return [line for line in self.lines if line.name.startswith(prefix)]
