"""
GravityClient with its transport injected, in-process: retries, redirects, bounded reads, the key and the sending
threads. Redirects run over real HTTP on loopback (two servers in this process); the rest through an adapter that
answers crafted responses.
"""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Callable, Iterator

import pytest
import requests
import urllib3

from airflow_provider_gravity.conversions.api.client import GravityClient, RetryPolicy
from airflow_provider_gravity.conversions.api.transport import MAX_RESPONSE_BYTES
from airflow_provider_gravity.conversions.encoded_event import EncodedEvent, EncodedEvents
from airflow_provider_gravity.conversions.errors import (
    GravityAuthError,
    GravityRedirectError,
    GravityRequestRejected,
    GravityResponseError,
    GravityUnavailableError,
)

KEY = "Gravity-Secret-Key-7f3a9c"
EVENTS = [
    EncodedEvent("Purchase", f"o-{i}", json.dumps({"event_id": f"o-{i}", "event_name": "Purchase"})) for i in (1, 2)
]
#: An answer: status, headers, and the body as bytes or as a file-like object to stream.
Reply = tuple[int, dict[str, str], bytes | io.RawIOBase]


def ok_answer(body: bytes) -> bytes:
    return json.dumps(
        {"results": [{"event_id": e["event_id"], "status": "ok"} for e in json.loads(body)["data"]]}
    ).encode()


class CraftedGravity(requests.adapters.HTTPAdapter):
    """A transport adapter that answers each request with the next crafted reply and keeps what it was sent."""

    def __init__(self, *replies: Reply | Callable[[bytes], Reply]) -> None:
        super().__init__()
        self.replies = list(replies)
        self.requests: list[requests.PreparedRequest] = []
        self._lock = threading.Lock()

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        with self._lock:
            self.requests.append(request)
            reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        status, headers, body = reply(request.body) if callable(reply) else reply
        stream = io.BufferedReader(body, 65_536) if isinstance(body, io.RawIOBase) else io.BytesIO(body)
        raw = urllib3.HTTPResponse(body=stream, headers=headers, status=status, preload_content=False)
        return self.build_response(request, raw)


class EndlessBody(io.RawIOBase):
    """An answer body that never ends, counting what was read of it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        buffer[:] = b"x" * len(buffer)
        self.read_bytes += len(buffer)
        return len(buffer)


def client_with(adapter: requests.adapters.BaseAdapter, waits: list[float] | None = None, **kwargs) -> GravityClient:
    return GravityClient(
        "https://api.trygravity.ai",
        KEY,
        retry=RetryPolicy(max_retries=2, backoff_base=0.01),
        sleep=(waits if waits is not None else []).append,
        adapter=adapter,
        **kwargs,
    )


def shown(error: BaseException) -> str:
    """Everything a log line or a task's failure could print of ``error``."""
    return " ".join([str(error), repr(error), repr(error.args), repr(vars(error))])


def test_a_429_then_a_200_is_retried_after_retry_after_and_counted():
    waits: list[float] = []
    gravity = CraftedGravity((429, {"Retry-After": "0.25"}, b"slow down"), lambda body: (200, {}, ok_answer(body)))
    client = client_with(gravity, waits)

    results = client.send_events(EVENTS)

    assert [r.status for r in results] == ["ok", "ok"]
    assert (client.requests_sent, client.retries) == (2, 1)
    assert waits == [0.25]
    assert gravity.requests[0].body == gravity.requests[1].body  # the same batch, sent again


def test_a_batch_of_columns_is_sent_and_matched_as_the_same_events_one_by_one():
    answers = [
        (200, {}, b'{"results":[{"event_id":"o-1","status":"ok"},{"event_id":"o-2","status":"error","error":"x"}]}')
    ]
    by_event, by_column = CraftedGravity(*answers), CraftedGravity(*answers)
    batch = EncodedEvents([e.event_name for e in EVENTS], [e.event_id for e in EVENTS], [e.json for e in EVENTS])

    one_by_one = client_with(by_event).send_events(EVENTS)
    as_columns = client_with(by_column).send_events(batch)

    assert as_columns == one_by_one
    assert [r.status for r in as_columns] == ["ok", "error"]
    assert by_column.requests[0].body == by_event.requests[0].body
    assert list(batch) == EVENTS and list(batch[1:]) == EVENTS[1:] and batch[0] == EVENTS[0]


def test_5xx_that_outlast_the_retries_name_the_attempts_and_the_last_status():
    gravity = CraftedGravity((503, {}, b"down"))
    client = client_with(gravity)

    with pytest.raises(GravityUnavailableError, match="after 3 attempts; last: HTTP 503") as raised:
        client.send_events(EVENTS)

    assert raised.value.last_status == 503
    assert (client.requests_sent, client.retries) == (3, 2)


class Handler(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the server's ``reply`` and keeps the paths it was asked for."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.paths.append(self.path)
        status, headers, body = self.server.reply
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[Callable[[Reply], http.server.ThreadingHTTPServer]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(reply: Reply) -> http.server.ThreadingHTTPServer:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.paths, server.reply = [], reply
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_over_http_is_not_followed_and_names_why(loopback_server, status):
    elsewhere = loopback_server((200, {}, b'{"results": []}'))
    target = f"http://localhost:{elsewhere.server_port}/gateway/events"
    gravity = loopback_server((status, {"Location": target}, b""))
    client = GravityClient(f"http://127.0.0.1:{gravity.server_port}", KEY, retry=RetryPolicy(max_retries=2))

    with pytest.raises(GravityRedirectError) as raised:
        client.send_events(EVENTS)

    assert f"HTTP {status}, a redirect to host 'localhost'" in str(raised.value)
    assert "never followed" in str(raised.value)
    assert gravity.paths == ["/gateway/events"]  # asked once: a redirect is not retried either
    assert elsewhere.paths == []  # and the key never went where it pointed
    assert client.check_connection() == (False, str(raised.value))
    client.close()


def test_an_endless_answer_is_refused_after_the_limit_without_being_read_to_its_end():
    body = EndlessBody()
    client = client_with(CraftedGravity((200, {}, body)))

    with pytest.raises(GravityResponseError, match=f"larger than {MAX_RESPONSE_BYTES:,} bytes"):
        client.send_events(EVENTS)

    assert MAX_RESPONSE_BYTES < body.read_bytes <= MAX_RESPONSE_BYTES + 2 * 65_536
    assert client.requests_sent == 1  # not retried: a body that size is not Gravity's answer


def test_an_answer_declared_too_long_is_not_read_at_all():
    body = EndlessBody()
    client = client_with(CraftedGravity((200, {"Content-Length": str(MAX_RESPONSE_BYTES + 1)}, body)))

    with pytest.raises(GravityResponseError, match="larger than"):
        client.send_events(EVENTS)

    assert body.read_bytes == 0


def test_an_error_answer_too_long_to_read_is_named_so():
    client = client_with(CraftedGravity((400, {"Content-Length": str(MAX_RESPONSE_BYTES + 1)}, EndlessBody())))

    with pytest.raises(GravityRequestRejected, match=r"an answer too large to read"):
        client.send_events(EVENTS)


@pytest.mark.parametrize(
    ("status", "error_class"), [(401, GravityAuthError), (403, GravityAuthError), (422, GravityRequestRejected)]
)
@pytest.mark.parametrize("echo", [KEY, KEY.upper(), f"Bearer {KEY}", KEY.encode().hex(), KEY[3:14]])
def test_the_key_echoed_in_an_error_answer_is_not_in_the_raised_exception(status, error_class, echo):
    answer = json.dumps({"error": f"bad credentials: {echo}"}).encode()
    client = client_with(CraftedGravity((status, {}, answer)), auth_header="x-api-key")

    with pytest.raises(error_class) as raised:
        client.send_events(EVENTS)

    assert "bad credentials: " in str(raised.value) and "***" in str(raised.value)
    assert KEY.lower()[3:11] not in shown(raised.value).lower()


def test_the_key_in_a_transport_failure_is_not_in_the_raised_exception():
    class Failing(requests.adapters.BaseAdapter):
        def send(self, request, **kwargs):
            raise requests.ConnectionError(f"could not send {request.headers['Authorization']}")

        def close(self) -> None:
            pass

    client = client_with(Failing())

    with pytest.raises(GravityUnavailableError, match="last: ConnectionError") as raised:
        client.send_events(EVENTS)

    assert KEY not in shown(raised.value) and raised.value.__cause__ is None
    assert KEY not in " ".join([repr(client), repr(vars(client)), repr(vars(client.transport))])


def test_each_sending_thread_posts_through_its_own_session_over_one_shared_adapter():
    threads = 4
    in_flight = threading.Barrier(threads, timeout=10)

    def answer(body: bytes) -> Reply:
        in_flight.wait()  # every thread is inside the one adapter at once
        return 200, {}, ok_answer(body)

    gravity = CraftedGravity(answer)
    client = client_with(gravity)
    sessions: list[requests.Session] = []

    def send() -> None:
        assert all(r.delivered for r in client.send_events(EVENTS))
        sessions.append(client.transport._local.session)

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert len(sessions) == threads and len({id(session) for session in sessions}) == threads
    assert client.session not in sessions  # copies of the client's session, not the session itself
    assert all(session.adapters is client.session.adapters for session in sessions)
    assert all(session.get_adapter("https://api.trygravity.ai") is gravity for session in sessions)
    assert len({id(session.cookies) for session in sessions}) == threads  # a cookie jar each, written by one thread
    assert len({id(session.headers) for session in sessions}) == threads
    assert {request.headers["Authorization"] for request in gravity.requests} == {f"Bearer {KEY}"}
    assert client.requests_sent == threads


def test_an_injected_session_is_sent_through_with_the_client_s_headers_auth_and_no_redirects():
    gravity = CraftedGravity(lambda body: (200, {}, ok_answer(body)))
    session = requests.Session()
    session.mount("https://", gravity)

    client = GravityClient("https://api.trygravity.ai", KEY, session=session)
    results = client.send_events(EVENTS)

    assert client.session is session and [r.status for r in results] == ["ok", "ok"]
    (request,) = gravity.requests
    assert request.headers["Authorization"] == f"Bearer {KEY}" and request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("airflow-provider-gravity/")
    assert session.trust_env is False  # the environment was read once, when the client was made


def test_an_injected_session_of_a_subclass_keeps_its_behaviour_in_every_sending_thread():
    class SigningSession(requests.Session):
        """A session whose requests carry a signature its own code adds, as request-signing sessions do."""

        def __init__(self, secret: str) -> None:
            super().__init__()
            self.secret = secret

        def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
            prepared = super().prepare_request(request)
            prepared.headers["X-Signature"] = f"signed-by-{self.secret}"
            return prepared

    gravity = CraftedGravity(lambda body: (200, {}, ok_answer(body)))
    session = SigningSession("proxy-team")
    session.mount("https://", gravity)
    client = GravityClient("https://api.trygravity.ai", KEY, session=session)

    worker = threading.Thread(target=lambda: client.send_events(EVENTS))  # the pipeline sends from its threads
    worker.start()
    worker.join()
    client.send_events(EVENTS)  # and from the thread that made the client

    assert [request.headers.get("X-Signature") for request in gravity.requests] == ["signed-by-proxy-team"] * 2
    assert isinstance(client.transport._local.session, SigningSession)
