"""
A fast local stand-in for Gravity's ``POST /gateway/events``, for benchmarks: it answers ``ok`` to every event.

Run it as its own process (``python benchmarks/fast_sink.py --port 8099``, the API key in ``$FAST_SINK_API_KEY``)
or start it from Python with :class:`FastSink`. It speaks just enough HTTP/1.1 (keep-alive, ``Content-Length``
bodies) to answer the provider's client and ``requests``:

- ``POST /gateway/events``: checks ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (401 otherwise), decodes
  only the ``event_id`` of each event of ``{"data": [...]}`` with msgspec (400 for a body that is not such an
  envelope or has no event, 413 for more than 1,000 events) and answers
  ``{"results": [{"event_id": ..., "status": "ok"}, ...]}`` in the events' order;
- ``GET /stats``: requests, events, distinct event ids, ids seen more than once, refused requests and the
  server's own CPU seconds, so a benchmark can check that every row arrived once and what the sink cost;
- ``POST /reset``: zeroes the counters.

Unlike the sandbox it validates nothing else, stores no event and never answers ``duplicate``. Two servers
are built in: one asyncio protocol (uvloop when installed), the default, and one thread per connection over
raw sockets; ``python benchmarks/fast_sink.py --compare`` measures the CPU each costs per request.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

API_KEY_ENV = "FAST_SINK_API_KEY"
EVENTS_PATH = "/gateway/events"
MAX_EVENTS_PER_REQUEST = 1_000
MAX_BODY_BYTES = 20 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
SERVERS = ("asyncio", "threaded")


class _Event(msgspec.Struct):
    event_id: str | int | None = None  # every other key is skipped by the decoder, unread


class _Envelope(msgspec.Struct):
    data: list[_Event]


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class Sink:
    """
    What the sink does with one request, whichever server reads it; thread-safe.

    :param api_key: the key a request must carry.
    :param track_ids: keep every event id seen, to count distinct ids and repeats.
    """

    def __init__(self, api_key: str, track_ids: bool = True) -> None:
        self._bearer = f"Bearer {api_key}".encode()
        self._key = api_key.encode()
        self.track_ids = track_ids
        self._decode = msgspec.json.Decoder(_Envelope).decode
        self._encode = msgspec.json.Encoder().encode
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = self.events = self.refused = 0
            self.ids: set[str | int | None] = set()
            self.repeated = 0
            self._cpu_base = _cpu_seconds()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "events": self.events,
                "unique_events": len(self.ids) if self.track_ids else None,
                "repeated_events": self.repeated if self.track_ids else None,
                "refused_requests": self.refused,
                "cpu_seconds": round(_cpu_seconds() - self._cpu_base, 3),  # since start or the last reset
            }

    def authorized(self, authorization: bytes | None, api_key: bytes | None) -> bool:
        if authorization is not None and hmac.compare_digest(authorization.strip(), self._bearer):
            return True
        return api_key is not None and hmac.compare_digest(api_key.strip(), self._key)

    def handle(self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes) -> tuple[int, bytes]:
        """The status and JSON body of the answer to one request."""
        path = path.split(b"?", 1)[0]
        if path == EVENTS_PATH.encode():
            if method != b"POST":
                return 405, b'{"error":"method not allowed"}'
            if not self.authorized(headers.get(b"authorization"), headers.get(b"x-api-key")):
                with self._lock:
                    self.refused += 1
                return 401, b'{"error":"invalid API key"}'
            return self._events(body)
        if path == b"/stats" and method == b"GET":
            return 200, json.dumps(self.stats()).encode()
        if path == b"/reset" and method == b"POST":
            self.reset()
            return 200, b'{"reset":true}'
        return 404, b'{"error":"not found"}'

    def _events(self, body: bytes) -> tuple[int, bytes]:
        try:
            events = self._decode(body).data
        except msgspec.DecodeError:
            return self._refuse(400, b'{"error":"the body is not a {\\"data\\": [...]} envelope of events"}')
        if not events:
            return self._refuse(400, b'{"error":"no events"}')
        if len(events) > MAX_EVENTS_PER_REQUEST:
            return self._refuse(413, b'{"error":"more than 1000 events"}')
        ids = [event.event_id for event in events]
        with self._lock:
            self.requests += 1
            self.events += len(ids)
            if self.track_ids:
                before = len(self.ids)
                self.ids.update(ids)
                self.repeated += len(ids) - (len(self.ids) - before)
        encode = self._encode
        return 200, (
            b'{"results":[{"event_id":'
            + b',"status":"ok"},{"event_id":'.join([encode(event_id) for event_id in ids])
            + b',"status":"ok"}]}'
        )

    def _refuse(self, status: int, body: bytes) -> tuple[int, bytes]:
        with self._lock:
            self.refused += 1
        return status, body


_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found", 405: b"Method Not Allowed"}
_REASONS |= {411: b"Length Required", 413: b"Content Too Large", 431: b"Request Header Fields Too Large"}


def _response(status: int, body: bytes, close: bool) -> bytes:
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        status,
        _REASONS.get(status, b"Error"),
        len(body),
    )
    return head + (b"Connection: close\r\n\r\n" if close else b"\r\n") + body


class _RequestHead:
    """The request line and headers of one request, and whether the connection stays open after it."""

    __slots__ = ("method", "path", "headers", "length", "keep_alive", "error")

    def __init__(self, raw: bytes) -> None:
        lines = raw.split(b"\r\n")
        parts = lines[0].split(b" ")
        self.method, self.path = (parts[0], parts[1]) if len(parts) == 3 else (b"", b"")
        self.headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower()] = value.strip()
        connection = self.headers.get(b"connection", b"").lower()
        http10 = len(parts) == 3 and parts[2] == b"HTTP/1.0"
        self.keep_alive = connection != b"close" and not (http10 and connection != b"keep-alive")
        self.error: int | None = None
        self.length = 0
        if not self.method:
            self.error = 400
        elif b"transfer-encoding" in self.headers:
            self.error = 411  # the clients benchmarked send Content-Length
        else:
            length = self.headers.get(b"content-length", b"0")
            if not length.isdigit():
                self.error = 400
            elif int(length) > MAX_BODY_BYTES:
                self.error = 413
            else:
                self.length = int(length)


# --------------------------------------------------------------------------- asyncio server


class _SinkProtocol(asyncio.BufferedProtocol):
    """
    One keep-alive connection. The loop reads straight into our buffers: headers into ``head``, then each
    body into a buffer of its ``Content-Length``, so a body is copied once, by the kernel.
    """

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.head_buffer = bytearray(MAX_HEADER_BYTES)
        self.filled = 0  # bytes of head_buffer received and not yet used
        self.request: _RequestHead | None = None
        self.body = bytearray()
        self.body_filled = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.request is not None:
            return memoryview(self.body)[self.body_filled :]
        return memoryview(self.head_buffer)[self.filled :]

    def buffer_updated(self, nbytes: int) -> None:
        if self.request is not None:
            self.body_filled += nbytes
            if self.body_filled == len(self.body):
                self._answer()
            return
        self.filled += nbytes
        self._read_heads()

    def _read_heads(self) -> None:
        """Parse every request whose head is in ``head_buffer``; stop at one whose body is still to come."""
        while self.transport is not None and self.filled:
            end = self.head_buffer.find(b"\r\n\r\n", 0, self.filled)
            if end < 0:
                if self.filled == len(self.head_buffer):
                    self._reply(431, b'{"error":"headers too large"}', close=True)
                return
            request = _RequestHead(bytes(self.head_buffer[:end]))
            if request.error:
                self._reply(request.error, b'{"error":"unsupported request"}', close=True)
                return
            if request.headers.get(b"expect", b"").lower() == b"100-continue":
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            start = end + 4
            arrived = min(self.filled - start, request.length)
            self.request, self.body, self.body_filled = request, bytearray(request.length), arrived
            self.body[:arrived] = self.head_buffer[start : start + arrived]
            rest = self.filled - start - arrived
            # the next request's first bytes, if any, to the front (same length: the loop may hold a view)
            self.head_buffer[:rest] = self.head_buffer[start + arrived : self.filled]
            self.filled = rest
            if self.body_filled < request.length:
                return
            self._answer(parse_more=False)

    def _answer(self, parse_more: bool = True) -> None:
        request, body = self.request, self.body
        assert request is not None
        self.request, self.body, self.body_filled = None, bytearray(), 0
        status, answer = self.sink.handle(request.method, request.path, request.headers, body)
        self._reply(status, answer, close=not request.keep_alive)
        if parse_more:
            self._read_heads()

    def _reply(self, status: int, body: bytes, close: bool) -> None:
        assert self.transport is not None
        self.transport.write(_response(status, body, close))
        if close:
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def serve_asyncio(sink: Sink, sock: socket.socket) -> None:
    try:
        import uvloop
    except ImportError:
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()

    async def main() -> None:
        server = await loop.create_server(lambda: _SinkProtocol(sink), sock=sock)
        async with server:
            await server.serve_forever()

    loop.run_until_complete(main())


# --------------------------------------------------------------------------- threaded server


class _ThreadedHandler(socketserver.StreamRequestHandler):
    """One keep-alive connection in its own thread, read through a buffered file."""

    rbufsize = 256 * 1024
    sink: Sink

    def handle(self) -> None:
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            lines = []
            size = 0
            while (line := self.rfile.readline(MAX_HEADER_BYTES + 1)) not in (b"\r\n", b"\n", b""):
                lines.append(line.rstrip(b"\r\n"))
                size += len(line)
                if size > MAX_HEADER_BYTES:
                    self.wfile.write(_response(431, b'{"error":"headers too large"}', close=True))
                    return
            if not lines:
                return  # the client closed the connection
            head = _RequestHead(b"\r\n".join(lines))
            if head.error:
                self.wfile.write(_response(head.error, b'{"error":"unsupported request"}', close=True))
                return
            if head.headers.get(b"expect", b"").lower() == b"100-continue":
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = self.rfile.read(head.length)
            if len(body) < head.length:
                return
            status, answer = self.sink.handle(head.method, head.path, head.headers, body)
            self.wfile.write(_response(status, answer, close=not head.keep_alive))
            if not head.keep_alive:
                return


class _ThreadedServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_threaded(sink: Sink, sock: socket.socket) -> None:
    handler = type("Handler", (_ThreadedHandler,), {"sink": sink})
    server = _ThreadedServer(sock.getsockname(), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.serve_forever(poll_interval=0.5)


# --------------------------------------------------------------------------- launcher


class FastSink:
    """
    The sink in a subprocess on a free loopback port: ``with FastSink() as sink: post to sink.url``.

    :param api_key: the key it accepts (through the environment, not argv).
    :param server: ``asyncio`` or ``threaded``.
    :param track_ids: count distinct event ids (a set of every id: memory of the sink, not of the client).
    """

    def __init__(self, api_key: str = "fast-sink-key", server: str = "asyncio", track_ids: bool = True) -> None:
        self.api_key = api_key
        self.server = server
        self.track_ids = track_ids
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the fast sink is not started")
        return f"http://127.0.0.1:{self.port}"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def start(self, timeout: float = 20.0) -> FastSink:
        from airflow_provider_gravity.sandbox.launcher import free_loopback_port

        self.port = free_loopback_port()
        command = [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port), "--server", self.server]
        if not self.track_ids:
            command.append("--no-track-ids")
        env = {**os.environ, API_KEY_ENV: self.api_key}
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log.seek(0)
                raise RuntimeError(f"the fast sink exited: {self._log.read().decode(errors='replace')[-2000:]}")
            try:
                self.stats()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the fast sink did not answer within {timeout:g}s")

    def _call(self, method: str, path: str) -> dict[str, Any]:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=b"" if method == "POST" else None)
            response = connection.getresponse()
            payload = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"{method} {path}: HTTP {response.status} {payload}")
            return payload
        finally:
            connection.close()

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def reset(self) -> None:
        self._call("POST", "/reset")

    def stop(self) -> None:
        from airflow_provider_gravity.sandbox.launcher import stop_process

        process, self.process = self.process, None
        if process is not None:
            stop_process(process)

    def __enter__(self) -> FastSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self._log.close()


# --------------------------------------------------------------------------- measuring the two servers


def sample_bodies(count: int, events_per_body: int = 1_000) -> list[bytes]:
    """Request bodies shaped like the operator's (hashed match keys, custom data), for load tests."""
    import hashlib

    bodies = []
    for body in range(count):
        events = []
        for index in range(body * events_per_body, (body + 1) * events_per_body):
            digest = hashlib.sha256(str(index).encode()).hexdigest()
            user = {"em": [digest], "external_id": [f"cust-{index % 200_000:07d}"], "fn": digest, "ph": [digest]}
            events.append(
                {
                    "action_source": "physical_store",
                    "custom_data": {"currency": "EUR", "value": 42.5},
                    "event_id": f"ord-{index:09d}",
                    "event_name": "Purchase",
                    "event_time": 1_767_225_600,
                    "user_data": user,
                }
            )
        bodies.append(msgspec.json.encode({"data": events}))
    return bodies


def post_all(url: str, headers: dict[str, str], bodies: list[bytes], threads: int) -> float:
    """POST every body with ``threads`` keep-alive ``requests`` sessions; return the seconds taken."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    local = threading.local()

    def post(body: bytes) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        response = local.session.post(url, data=body, headers=headers, timeout=60)
        response.raise_for_status()
        if len(response.json()["results"]) != body.count(b'"event_id"'):
            raise RuntimeError("a result is missing")

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, bodies))
    return time.perf_counter() - started


def compare(requests_count: int, threads: int, log: Callable[[str], None] = print) -> dict[str, float]:
    """Each server's CPU microseconds per event for the same bodies; lower is cheaper."""
    bodies = sample_bodies(requests_count)
    events = requests_count * MAX_EVENTS_PER_REQUEST
    costs = {}
    for server in SERVERS:
        with FastSink(server=server) as sink:
            headers = {**sink.auth_headers(), "Content-Type": "application/json"}
            post_all(sink.url + EVENTS_PATH, headers, bodies[:5], threads)  # warm-up
            before = sink.stats()["cpu_seconds"]
            seconds = post_all(sink.url + EVENTS_PATH, headers, bodies, threads)
            stats = sink.stats()
            cpu = stats["cpu_seconds"] - before
            costs[server] = cpu / events * 1e6
            log(
                f"{server:<9} {threads} client threads: {events / seconds:>10,.0f} events/s wall, "
                f"sink CPU {costs[server]:.2f} us/event ({cpu / requests_count * 1e3:.2f} ms/request), "
                f"{stats['unique_events']:,} distinct of {stats['events']:,}"
            )
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--server", choices=SERVERS, default="asyncio")
    parser.add_argument("--no-track-ids", dest="track_ids", action="store_false", help="do not count distinct ids")
    parser.add_argument("--compare", action="store_true", help="measure both servers and exit")
    parser.add_argument("--requests", type=int, default=300, help="requests of 1,000 events for --compare")
    parser.add_argument("--threads", type=int, default=4, help="client threads for --compare")
    args = parser.parse_args(argv)
    if args.compare:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        compare(args.requests, args.threads)
        return 0
    api_key = os.environ.get(API_KEY_ENV)
    if not api_key:
        parser.error(f"set the API key in ${API_KEY_ENV}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    sink = Sink(api_key, track_ids=args.track_ids)
    try:
        (serve_asyncio if args.server == "asyncio" else serve_threaded)(sink, sock)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
