"""A hostile stand-in for Gravity's ``POST /gateway/events``: a stdlib HTTP server whose answers a test scripts.

Each request is answered by the next :class:`Mode` of a queue, then by a default mode: an honest answer, or one
that leaves results out, adds results for events never sent, repeats a result with another status, shuffles
them, strips their ids, redirects to another server, answers any HTTP status, HTML, a body of tens of MB or JSON
nested a thousand levels deep, refuses the requests that hold given events, or echoes the API key it received
back in error messages (in other letter cases, URL-encoded, JSON-escaped, in hex or base64 at any offset). The
server records every request (headers and decoded JSON body) and counts, per ``(event_name, event_id)``, how
many times it acknowledged the event as ``ok`` in a way the client could read, so that tests can prove nothing
was counted twice.

Uses only the standard library and nothing from the provider, so that it is an independent reading of the
API contract.
"""

from __future__ import annotations

import base64
import functools
import json
import random
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, quote_plus

EVENTS_PATH = "/gateway/events"
REDIRECT_STATUSES = (301, 302, 307, 308)
MIB = 1 << 20
# Written again and again for a huge body, so that serving tens of MB allocates nothing per request.
_PADDING_BLOCK = b"x" * MIB


@dataclass(frozen=True)
class Mode:
    """
    How the server answers one request. Build modes with the functions below (:func:`honest`, :func:`omit`, ...).

    :param kind: ``honest``, ``omit``, ``extra``, ``duplicate``, ``reorder``, ``strip_ids``, ``redirect``,
        ``status``, ``html``, ``huge``, ``refuse`` or ``echo_key``.
    :param event_ids: the events the mode picks on (omitted, duplicated, stripped, ...); ``None`` picks the last
        ``count`` events of the request.
    :param count: how many events are picked when ``event_ids`` is ``None``.
    :param verdicts: per-event status instead of ``ok``, in every answer with results, keyed by ``event_id``
        (``{"o3": "error"}``) or by ``(event_name, event_id)`` (``{("Lead", "o3"): "error"}``).
    :param with_names: results carry the event's ``event_name`` as well as its ``event_id``.
    :param status: the HTTP status of ``status``, ``redirect``, ``refuse`` and a batch-level ``echo_key`` answer.
    :param body: the body of a ``status`` or ``refuse`` answer (``str`` is sent as UTF-8).
    :param headers: extra response headers, e.g. ``{"Retry-After": "0"}``.
    :param location: the ``Location`` of a ``redirect``.
    :param conflicting: a ``duplicate`` result carries another status (``error``) than the first one.
    :param nameless_copy: the repeated ``duplicate`` result carries no ``event_name`` (the first one does when
        ``with_names``).
    :param seed: the shuffle of ``reorder``.
    :param size: bytes of a ``huge`` body.
    :param chunked: send a ``huge`` body with ``Transfer-Encoding: chunked`` (no ``Content-Length``).
    :param gzip: send a ``huge`` body gzip-compressed: a decompression bomb.
    :param delay: seconds to wait before answering.
    :param disguise: the one form of :data:`KEY_DISGUISES` an ``echo_key`` answer uses; ``None`` for all.
    """

    kind: str
    event_ids: frozenset[str] | None = None
    count: int = 1
    verdicts: Mapping[str | tuple[str, str], str] = field(default_factory=dict)
    with_names: bool = False
    status: int = 200
    body: str | bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    location: str | None = None
    conflicting: bool = True
    nameless_copy: bool = False
    seed: int = 0
    size: int = 40 * MIB
    chunked: bool = False
    gzip: bool = False
    delay: float = 0.0
    disguise: str | None = None

    def picked(self, events: list[dict]) -> set[int]:
        """Positions of the events this mode picks on in one request."""
        if self.event_ids is not None:
            return {i for i, event in enumerate(events) if str(event.get("event_id")) in self.event_ids}
        return set(range(max(0, len(events) - self.count), len(events)))


def _ids(event_ids: Iterable[str] | None) -> frozenset[str] | None:
    return None if event_ids is None else frozenset(str(i) for i in event_ids)


def honest(**options: Any) -> Mode:
    """One result per event, in order, ``ok`` (or the event's entry of ``verdicts``), echoing ``event_id``."""
    return Mode("honest", **options)


def omit(event_ids: Iterable[str] | None = None, count: int = 1, **options: Any) -> Mode:
    """Like :func:`honest`, but without the results of the picked events."""
    return Mode("omit", _ids(event_ids), count, **options)


def extra(count: int = 2, replace: Iterable[str] | None = None, **options: Any) -> Mode:
    """
    Results for ``count`` events never sent (unknown ``event_id``), appended to the honest results; with
    ``replace``, those events' results are replaced by unknown ones instead (same number of results).
    """
    if replace is not None:
        return Mode("extra", _ids(replace), **options)
    return Mode("extra", None, count, **options)


def duplicate(event_ids: Iterable[str] | None = None, count: int = 1, conflicting: bool = True, **options) -> Mode:
    """
    The picked events' results twice; the second one says ``error`` when ``conflicting``, and carries no
    ``event_name`` with ``nameless_copy=True``.
    """
    return Mode("duplicate", _ids(event_ids), count, conflicting=conflicting, **options)


def reorder(seed: int = 7, **options: Any) -> Mode:
    """Honest results, shuffled (never left in request order when there are two or more)."""
    return Mode("reorder", seed=seed, **options)


def strip_ids(event_ids: Iterable[str] | None = None, count: int = 1, **options: Any) -> Mode:
    """Honest results, but the picked events' results carry no ``event_id`` (nor ``event_name``)."""
    return Mode("strip_ids", _ids(event_ids), count, **options)


def redirect(location: str, status: int = 307, **options: Any) -> Mode:
    """A redirect (301, 302, 307 or 308) to ``location``."""
    return Mode("redirect", status=status, location=location, **options)


def status(code: int, body: str | bytes | None = None, **options: Any) -> Mode:
    """Any HTTP status, with an optional body (JSON ``{"error": ...}`` by default)."""
    return Mode("status", status=code, body=body, **options)


def refuse(event_ids: Iterable[str], body: str | bytes | None = None, code: int = 400, **options: Any) -> Mode:
    """
    Refuse whole (HTTP ``code``, with ``body``) every request that holds one of ``event_ids``, as Gravity refuses
    a batch with a bad event; other requests get honest answers.
    """
    return Mode("refuse", _ids(event_ids), status=code, body=body, **options)


def nested_json(depth: int, kind: str = "array", inner: str = "0") -> str:
    """JSON nested ``depth`` levels around ``inner``: ``[[[0]]]`` or ``{"a": {"a": 0}}``; 1,000 arrays are 2 KB."""
    if kind == "array":
        return "[" * depth + inner + "]" * depth
    return '{"a": ' * depth + inner + "}" * depth


def html(**options: Any) -> Mode:
    """200 with an HTML page, as a captive portal or a misrouted load balancer would answer."""
    return Mode("html", **options)


def huge(size: int = 40 * MIB, chunked: bool = False, gzip: bool = False, **options: Any) -> Mode:
    """
    200 with a body of ``size`` bytes: a JSON object without ``results``, padded with ``x``. With ``gzip``, the
    body is sent compressed (``Content-Encoding: gzip``, a few hundred KB): ``size`` is what it expands to.
    """
    return Mode("huge", size=size, chunked=chunked, gzip=gzip, **options)


def echo_key(
    event_ids: Iterable[str] | None = None,
    batch_status: int | None = None,
    disguise: str | None = None,
    **options: Any,
) -> Mode:
    """
    Echo the API key the request carried, in every form of :data:`KEY_DISGUISES` (or only ``disguise``): as
    each picked event's error (``event_ids=None`` picks every event), or, with ``batch_status``, as the error
    of a whole request that holds a picked event (any request when ``event_ids`` is ``None``); other requests
    get honest answers.
    """
    picked = _ids(event_ids)
    if batch_status is not None:
        return Mode("echo_key", picked, status=batch_status, disguise=disguise, **options)
    return Mode("echo_key", picked, count=1 << 30, disguise=disguise, **options)


def _alternate_case(text: str) -> str:
    return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(text))


def _base64(text: str, *, url_safe: bool = False, padded: bool = True) -> str:
    encoded = (base64.urlsafe_b64encode if url_safe else base64.b64encode)(text.encode()).decode()
    return encoded if padded else encoded.rstrip("=")


#: The forms in which a hostile server may echo a key: in another letter case, URL-encoded, JSON-escaped (in a
#: text Gravity's JSON carries: the client sees the escapes), in hex, and base64-encoded on its own or after a
#: prefix of 1 or 2 bytes (each of the three alignments of base64's 3-byte groups), padded or not.
KEY_DISGUISES: dict[str, Callable[[str], str]] = {
    "swapped-case": str.swapcase,
    "alternating-case": _alternate_case,
    "url-encoded": lambda key: quote(key, safe=""),
    "form-encoded-lower": lambda key: quote_plus(key).lower(),
    "url-encoded-keeping-slash": quote,
    "url-encoded-keeping-slash-mixed-case": lambda key: quote(_alternate_case(key)),
    "json-escaped": lambda key: json.dumps(key)[1:-1].replace("/", "\\/"),
    "json-unicode-escaped": lambda key: "".join(f"\\u{ord(c):04X}" for c in key),
    "hex": lambda key: key.encode().hex(),
    "base64": _base64,
    "base64-after-colon": lambda key: _base64(":" + key),
    "base64-after-t=": lambda key: _base64("t=" + key),
    "url-safe-base64-after-t=-unpadded": lambda key: _base64("t=" + key, url_safe=True, padded=False),
    "url-encoded-base64-after-bearer": lambda key: quote(_base64("Bearer " + key), safe=""),
}


def echoed_key_message(key: str, disguise: str | None = None) -> str:
    """
    An error message holding ``key`` in one disguise, short enough not to be cut (300 characters), or in every
    disguise: longer than that, so the client must scrub it whole before it cuts it.
    """
    names = [disguise] if disguise else list(KEY_DISGUISES)
    return f"token refused: {' / '.join(KEY_DISGUISES[name](key) for name in names)}"


@dataclass
class ReceivedRequest:
    """
    One request as the server received it.

    :param method: ``POST``, ``GET``, ...
    :param path: the request target.
    :param headers: the request headers, names lower-cased.
    :param body: the decoded JSON body, or ``None`` when it was empty or not JSON.
    :param mode: the kind of answer it got.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    mode: str

    @property
    def events(self) -> list[dict]:
        """The events of the request's ``{"data": [...]}`` envelope."""
        data = self.body.get("data") if isinstance(self.body, dict) else None
        return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []

    @property
    def credential(self) -> str | None:
        """The API key the request carried (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``)."""
        bearer = self.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            return bearer[7:]
        return self.headers.get("x-api-key") or bearer or None


@dataclass
class _Reply:
    status: int
    headers: dict[str, str]
    body: bytes | None = None
    huge_size: int = 0
    chunked: bool = False
    accepted: list[tuple[str, str]] = field(default_factory=list)


class HostileGravity:
    """
    A scriptable Gravity on a free loopback port, in a daemon thread: ``with HostileGravity() as server: ...``.

    :param default: the mode of every request once the queue is empty (:func:`honest` by default).
    :param host: the loopback address to listen on (``127.0.0.2`` gives a second host for redirects).
    :param api_key: the key tests hand the client; the server itself accepts any key.
    """

    def __init__(
        self, default: Mode | None = None, *, host: str = "127.0.0.1", api_key: str = "hostile-test-key"
    ) -> None:
        self.default = default or honest()
        self.host = host
        self.api_key = api_key
        self.requests: list[ReceivedRequest] = []
        self.accepted: Counter[tuple[str, str]] = Counter()
        self._queue: list[Mode] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the hostile server is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:50123`` (events go to ``url + "/gateway/events"``)."""
        return f"http://{self.host}:{self.port}"

    def queue(self, *modes: Mode, times: int = 1) -> HostileGravity:
        """Answer the next requests with ``modes`` (each ``times`` times), then with the default mode."""
        with self._lock:
            for mode in modes:
                self._queue.extend([mode] * times)
        return self

    def start(self) -> HostileGravity:
        handler = type("_BoundHandler", (_Handler,), {"gravity": self})
        self._server = ThreadingHTTPServer((self.host, 0), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits for one poll: keep tests fast
            name="hostile-gravity",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> HostileGravity:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def event_requests(self) -> list[ReceivedRequest]:
        """The ``POST /gateway/events`` requests received, in order."""
        return [r for r in self.requests if r.method == "POST" and r.path.split("?")[0] == EVENTS_PATH]

    def sent_event_ids(self) -> list[str]:
        """Every ``event_id`` received, in order, once per time it was received."""
        return [str(e.get("event_id")) for r in self.event_requests for e in r.events]

    def times_accepted(self, event_name: str, event_id: str) -> int:
        """How many times the server acknowledged this event as ``ok`` with a result the client could match."""
        return self.accepted[(event_name, event_id)]

    def credentials_seen(self) -> list[str]:
        """The API keys (or other authorization values) any request carried."""
        return [r.credential for r in self.requests if r.credential]

    # What follows runs in the server's threads.

    def _next_mode(self) -> Mode:
        with self._lock:
            return self._queue.pop(0) if self._queue else self.default

    def _record(self, request: ReceivedRequest, accepted: list[tuple[str, str]]) -> None:
        with self._lock:
            self.requests.append(request)
            self.accepted.update(accepted)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: without this, 40 ms per answer
    gravity: HostileGravity

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (TimeoutError, ConnectionError):
            pass  # the client hung up, e.g. after refusing a huge answer

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
        self._serve()

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    def do_PUT(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in self.headers.items()}
        mode = self.gravity._next_mode()
        request = ReceivedRequest(self.command, self.path, headers, body, mode.kind)
        reply = _answer(mode, request)
        self.gravity._record(request, reply.accepted)
        if mode.delay:
            time.sleep(mode.delay)
        try:
            self._write(reply)
        except (TimeoutError, ConnectionError):
            self.close_connection = True  # the client stopped reading (a huge body): that is its right

    def _write(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.huge_size:
            self._write_huge(reply)
            return
        body = reply.body or b""
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _write_huge(self, reply: _Reply) -> None:
        prefix, suffix = b'{"padding": "', b'"}'
        if reply.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(reply.huge_size))
        self.end_headers()
        for piece in _huge_pieces(reply.huge_size, prefix, suffix):
            if reply.chunked:
                self.wfile.write(b"%x\r\n" % len(piece))
                self.wfile.write(piece)
                self.wfile.write(b"\r\n")
            else:
                self.wfile.write(piece)
        if reply.chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True


@functools.lru_cache(maxsize=4)
def _gzipped_padding(size: int) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: the gzip container
    prefix, suffix = b'{"padding": "', b'"}'
    parts = [compressor.compress(bytes(piece)) for piece in _huge_pieces(size, prefix, suffix)]
    return b"".join([*parts, compressor.flush()])


def _huge_pieces(size: int, prefix: bytes, suffix: bytes) -> Iterator[bytes | memoryview]:
    yield prefix
    left = size - len(prefix) - len(suffix)
    block = memoryview(_PADDING_BLOCK)
    while left > 0:
        piece = block[: min(left, MIB)]
        left -= len(piece)
        yield piece
    yield suffix


def _json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> _Reply:
    return _Reply(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode())


def _answer(mode: Mode, request: ReceivedRequest) -> _Reply:
    """The reply of ``mode`` to ``request``, and the events it acknowledges as ``ok`` readably."""
    kind = mode.kind
    if kind == "redirect":
        return _Reply(mode.status, {"Location": mode.location or "/", **mode.headers}, b"")
    if kind == "status":
        body = mode.body if mode.body is not None else json.dumps({"error": f"HTTP {mode.status} from hostile"})
        return _Reply(mode.status, {"Content-Type": "application/json", **mode.headers}, _bytes(body))
    if kind == "html":
        page = "<!doctype html><html><head><title>Sign in</title></head><body><p>Please sign in.</p></body></html>"
        return _Reply(200, {"Content-Type": "text/html; charset=utf-8", **mode.headers}, page.encode())
    if kind == "huge" and mode.gzip:
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", **mode.headers}
        return _Reply(200, headers, _gzipped_padding(mode.size))
    if kind == "huge":
        return _Reply(200, {"Content-Type": "application/json", **mode.headers}, None, mode.size, mode.chunked)
    events = request.events
    if kind == "refuse" and mode.picked(events):
        body = mode.body if mode.body is not None else json.dumps({"error": "a bad event in this batch"})
        return _Reply(mode.status, {"Content-Type": "application/json", **mode.headers}, _bytes(body))
    if kind == "echo_key" and mode.status >= 300 and (mode.event_ids is None or mode.picked(events)):
        message = echoed_key_message(request.credential or "", mode.disguise)
        return _json(mode.status, {"error": message, "message": message}, mode.headers)
    results = [_result(mode, event) for event in events]
    picked = mode.picked(events)
    unreadable: set[int] = set()
    if kind == "omit":
        unreadable = picked
        results = [r for i, r in enumerate(results) if i not in picked]
    elif kind == "extra":
        if mode.event_ids is not None:
            unreadable = picked
            results = [_unknown_result(mode, i) if i in picked else r for i, r in enumerate(results)]
        else:
            results += [_unknown_result(mode, i) for i in range(mode.count)]
    elif kind == "duplicate":
        for i in sorted(picked):
            again = dict(results[i])
            if mode.conflicting:
                again.update(status="error" if results[i]["status"] == "ok" else "ok", error="conflicting result")
                unreadable.add(i)
            if mode.nameless_copy:
                again.pop("event_name", None)
            results.append(again)
    elif kind == "reorder":
        shuffled = list(results)
        shuffler = random.Random(mode.seed)
        while len(shuffled) > 1 and shuffled == results:
            shuffler.shuffle(shuffled)
        results = shuffled
    elif kind == "strip_ids":
        unreadable = picked
        for i in picked:
            results[i] = {k: v for k, v in results[i].items() if k not in ("event_id", "event_name")}
    elif kind == "echo_key" and mode.status < 300:
        unreadable = picked
        for i in picked:
            error = echoed_key_message(request.credential or "", mode.disguise)
            results[i] = {**results[i], "status": "error", "error": error}
    elif kind not in ("honest", "echo_key", "refuse"):
        raise ValueError(f"unknown hostile mode {kind!r}")
    accepted = [
        (str(event.get("event_name")), str(event.get("event_id")))
        for i, event in enumerate(events)
        if i not in unreadable and _verdict(mode, event) == "ok"
    ]
    reply = _json(200, {"results": results}, mode.headers)
    reply.accepted = accepted
    return reply


def _verdict(mode: Mode, event: dict) -> str:
    event_id = str(event.get("event_id"))
    return mode.verdicts.get((str(event.get("event_name")), event_id), mode.verdicts.get(event_id, "ok"))


def _result(mode: Mode, event: dict) -> dict:
    verdict = _verdict(mode, event)
    result: dict[str, Any] = {"event_id": event.get("event_id"), "status": verdict}
    if mode.with_names:
        result["event_name"] = event.get("event_name")
    if verdict == "error":
        result["error"] = "refused by hostile server"
    return result


def _unknown_result(mode: Mode, n: int) -> dict:
    result: dict[str, Any] = {"event_id": f"never-sent-{n}", "status": "ok"}
    if mode.with_names:
        result["event_name"] = "Purchase"
    return result


def _bytes(body: str | bytes) -> bytes:
    return body.encode() if isinstance(body, str) else body
