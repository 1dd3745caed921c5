"""GravityClient and GravityHook against the sandbox, over real HTTP on loopback."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import time

import pytest

from airflow_provider_gravity.conversions.api.client import GravityClient, RetryPolicy
from airflow_provider_gravity.conversions.api.transport import parse_retry_after
from airflow_provider_gravity.conversions.errors import (
    GravityAuthError,
    GravityRequestRejected,
    GravityUnavailableError,
)
from tests.support.airflow_fixtures import VENV_BIN

FAST_RETRY = RetryPolicy(max_retries=5, backoff_base=0.01, backoff_max=0.05)


def make_events(count: int, prefix: str = "order", event_time: int | None = None) -> list[dict]:
    when = event_time or int(time.time()) - 3600
    return [
        {"event_name": "Purchase", "event_time": when, "event_id": f"{prefix}-{i}", "action_source": "physical_store"}
        for i in range(count)
    ]


@pytest.fixture
def client(sandbox):
    client = GravityClient(sandbox.url, sandbox.api_key, retry=FAST_RETRY, timeout=5)
    yield client
    client.close()


def test_a_full_batch_of_1000_is_accepted_in_one_request(client, sandbox):
    results = client.send_events(make_events(1000))

    assert [r.event_id for r in results] == [f"order-{i}" for i in range(1000)]
    assert all(r.status == "ok" and r.delivered for r in results)
    stats = sandbox.stats()
    assert stats["requests"] == 1
    assert stats["largest_batch"] == 1000


def test_1001_events_are_refused_before_anything_is_sent(client, sandbox):
    with pytest.raises(ValueError, match="at most 1000"):
        client.send_events(make_events(1001))
    assert sandbox.stats()["requests"] == 0


def test_partial_failure_reports_each_event(client, sandbox):
    events = make_events(3)
    events[1]["event_time"] = "yesterday"

    results = client.send_events(events)

    assert [r.status for r in results] == ["ok", "error", "ok"]
    assert results[1].error
    assert not results[1].delivered


def test_duplicate_within_48_hours_then_new_after_49(client, sandbox):
    events = make_events(2)
    client.send_events(events)

    assert [r.status for r in client.send_events(events)] == ["duplicate", "duplicate"]
    sandbox.advance_clock(hours=49)
    events = make_events(2, event_time=int(sandbox.now()) - 60)
    assert [r.status for r in client.send_events(events)] == ["ok", "ok"]
    assert sandbox.stats()["redelivered"] == 2


def test_429_retry_after_is_honoured(sandbox):
    sandbox.faults({"kind": "status", "status": 429, "retry_after": "1", "count": 1})
    client = GravityClient(sandbox.url, sandbox.api_key, retry=FAST_RETRY)

    started = time.monotonic()
    results = client.send_events(make_events(5))
    elapsed = time.monotonic() - started

    assert all(r.status == "ok" for r in results)
    assert elapsed >= 1.0, "the client must wait the second Retry-After asked for"
    assert (client.requests_sent, client.retries) == (2, 1)
    assert sandbox.stats()["requests"] == 2


def test_two_503_then_success(client, sandbox):
    sandbox.faults({"kind": "status", "status": 503, "count": 2})

    results = client.send_events(make_events(10))

    assert all(r.status == "ok" for r in results)
    assert client.retries == 2
    assert sandbox.stats()["by_status"]["ok"] == 10


def test_dropped_connection_then_success(client, sandbox):
    sandbox.faults({"kind": "drop", "count": 1})

    results = client.send_events(make_events(10))

    assert all(r.status == "ok" for r in results)
    assert client.retries == 1
    assert sandbox.stats()["redelivered"] == 0


def test_retries_give_up_with_a_typed_error_naming_attempts_and_status(sandbox):
    sandbox.faults({"kind": "status", "status": 503, "count": 10})
    client = GravityClient(sandbox.url, sandbox.api_key, retry=RetryPolicy(max_retries=2, backoff_base=0.01))

    with pytest.raises(GravityUnavailableError) as raised:
        client.send_events(make_events(1))

    assert raised.value.attempts == 3
    assert raised.value.last_status == 503
    assert "3 attempts" in str(raised.value) and "HTTP 503" in str(raised.value)


def test_bad_key_fails_at_once_with_one_request(sandbox):
    client = GravityClient(sandbox.url, "not-the-key", retry=FAST_RETRY)

    with pytest.raises(GravityAuthError) as raised:
        client.send_events(make_events(3))

    assert raised.value.status == 401
    assert sandbox.stats()["requests"] == 1
    assert "not-the-key" not in str(raised.value)


def test_whole_batch_400_raises_the_typed_error(client, sandbox):
    sandbox.faults({"kind": "poison", "event_ids": ["order-2"]})

    with pytest.raises(GravityRequestRejected) as raised:
        client.send_events(make_events(5))

    assert raised.value.status == 400
    assert raised.value.message


def test_api_key_never_appears_in_logs_errors_or_repr(sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    sandbox.faults({"kind": "status", "status": 503, "count": 1})
    client = GravityClient(sandbox.url, sandbox.api_key, retry=FAST_RETRY)
    client.send_events(make_events(2))
    bad = GravityClient(sandbox.url, sandbox.api_key + "-wrong", retry=FAST_RETRY)
    with pytest.raises(GravityAuthError) as raised:
        bad.send_events(make_events(1))

    assert "Gravity request failed" in caplog.text  # the retry was logged...
    assert sandbox.api_key not in caplog.text  # ...without the key
    assert sandbox.api_key not in str(raised.value)
    assert sandbox.api_key not in repr(client)


@pytest.mark.parametrize("url", ["http://api.trygravity.ai", "http://10.0.0.5:8080", "ftp://127.0.0.1"])
def test_plain_http_to_a_remote_host_is_refused(url):
    with pytest.raises(ValueError):
        GravityClient(url, "key")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8085", "http://localhost:1", "http://[::1]:9", "https://x.io"])
def test_loopback_http_and_https_are_allowed(url):
    assert GravityClient(url, "key").base_url == url


def test_retry_after_accepts_seconds_and_http_dates():
    now = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert RetryPolicy(retry_after_max=5).delay(0, "3600") == 5


def test_hook_reads_the_connection_and_tests_it_without_sending(sandbox, monkeypatch):
    from airflow_provider_gravity.hooks.gravity import GravityHook

    conn = {"conn_type": "gravity", "host": sandbox.url, "password": sandbox.api_key, "extra": {"max_retries": 1}}
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_WRONG", json.dumps({**conn, "password": "wrong"}))

    hook = GravityHook()
    assert hook.test_connection()[0] is True
    assert hook.client.retry.max_retries == 1
    assert [r.status for r in hook.send_events(make_events(2))] == ["ok", "ok"]
    ok, message = GravityHook("gravity_wrong").test_connection()
    assert ok is False and "refused" in message
    assert sandbox.stats()["by_status"]["ok"] == 2


def test_the_hook_and_its_client_hold_no_readable_api_key(sandbox, monkeypatch):
    """Issue 9: ``vars(hook)`` showed the key, because the hook kept the ``Connection``."""
    from airflow_provider_gravity.hooks.gravity import GravityHook

    key = "Secret-Key-4242"
    monkeypatch.setenv(
        "AIRFLOW_CONN_GRAVITY_VARS", json.dumps({"conn_type": "gravity", "host": sandbox.url, "password": key})
    )
    hook = GravityHook("gravity_vars")
    client = hook.client
    shown = [vars(hook), vars(client), vars(client.session), client.session.headers, client.session.auth, client.scrub]

    assert all(key.lower() not in repr(item).lower() for item in shown)
    assert all(key.lower() not in repr(vars(item)).lower() for item in (client.session.auth, client.scrub))


def test_hook_refuses_plain_http_to_a_remote_host(monkeypatch):
    from airflow_provider_gravity.hooks.gravity import GravityHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_GRAVITY_REMOTE",
        json.dumps({"conn_type": "gravity", "host": "http://api.trygravity.ai", "password": "k"}),
    )
    with pytest.raises(ValueError, match="https"):
        GravityHook("gravity_remote").get_conn()


def test_provider_shows_up_in_airflow_cli(airflow_db):
    env = os.environ.copy()
    airflow = f"{VENV_BIN}/airflow"

    providers = subprocess.run([airflow, "providers", "list", "-o", "json"], env=env, capture_output=True, text=True)
    hooks = subprocess.run([airflow, "providers", "hooks", "-o", "json"], env=env, capture_output=True, text=True)

    assert providers.returncode == 0, providers.stderr
    listed = {p["package_name"]: p for p in json.loads(providers.stdout)}
    assert "airflow-provider-gravity" in listed
    gravity_hooks = [h for h in json.loads(hooks.stdout) if h.get("connection_type") == "gravity"]
    assert gravity_hooks and gravity_hooks[0]["class"] == "airflow_provider_gravity.hooks.gravity.GravityHook"


@pytest.mark.parametrize(
    ("uri", "base_url"),
    [
        ("gravity://:k@api.trygravity.ai?max_retries=2", "https://api.trygravity.ai"),
        ("gravity://:k@127.0.0.1:8085/http", "http://127.0.0.1:8085"),
        ("gravity://:k@", "https://api.trygravity.ai"),
    ],
)
def test_connection_uris_give_the_documented_base_url(monkeypatch, uri, base_url):
    from airflow_provider_gravity.hooks.gravity import GravityHook

    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_URI", uri)
    assert GravityHook("gravity_uri").client.base_url == base_url


def test_a_timed_out_request_is_retried(sandbox):
    sandbox.faults({"kind": "stall", "count": 1})
    client = GravityClient(sandbox.url, sandbox.api_key, retry=FAST_RETRY, timeout=0.5)

    results = client.send_events(make_events(3))

    assert [r.status for r in results] == ["ok", "ok", "ok"]
    assert client.retries == 1


def test_the_scrubber_leaves_no_stretch_of_the_key_whatever_the_text_around_it():
    """An adversarial review found 35 of 36 key characters left after a cut made before scrubbing."""
    from airflow_provider_gravity.conversions.api.secrets import KeyScrubber

    key = "sk_live_A1b2C3d4E5f6G7h8J9k0L1m2N3p4"
    scrub = KeyScrubber(key)
    texts = [
        "." * 13 + key * 33,
        key[:-1],
        key[:20] + "\n" + key[20:],
        base64.b64encode(f"Bearer {key}".encode()).decode(),
        key.upper().replace("_", "%5f"),
    ]
    for text in texts:
        scrubbed = scrub(text)
        assert len(scrubbed) <= 300
        assert not any(key[i : i + 8].lower() in scrubbed.lower() for i in range(len(key) - 7)), text


@pytest.mark.parametrize("value", ["-100", "nan", "inf", "-inf"])
def test_a_negative_or_non_finite_retry_after_falls_back_to_the_backoff(value):
    assert parse_retry_after(value) is None


@pytest.mark.parametrize("key", ["sk live", "sk_live_ключ123", "sk\x00live"])
def test_a_key_an_http_header_cannot_carry_is_refused_without_quoting_it(key):
    with pytest.raises(ValueError, match="cannot carry") as raised:
        GravityClient("http://127.0.0.1:9", key)
    assert key not in str(raised.value)


def test_a_key_pasted_with_its_line_break_works_and_a_connection_test_never_quotes_a_key(sandbox, monkeypatch):
    from airflow_provider_gravity.hooks.gravity import GravityHook

    pasted = {"conn_type": "gravity", "host": sandbox.url, "password": sandbox.api_key + "\n"}
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_PASTED", json.dumps(pasted))
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_UNICODE", json.dumps({**pasted, "password": "sk_ключ"}))

    assert GravityHook("gravity_pasted").test_connection()[0] is True
    ok, message = GravityHook("gravity_unicode").test_connection()
    assert ok is False and "ключ" not in message


class _ForwardProxy:
    """A plain HTTP forward proxy on loopback that records each request line it relays."""

    def __init__(self) -> None:
        import http.server
        import threading
        import urllib.request

        self.relayed: list[str] = []
        proxy = self
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # not through itself

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                proxy.relayed.append(f"{self.command} {self.path}")
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hop_by_hop = ("host", "connection", "proxy-connection", "content-length")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop_by_hop}
                forwarded = urllib.request.Request(self.path, data=body, headers=headers, method="POST")
                with direct.open(forwarded, timeout=10) as answer:
                    payload = answer.read()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def forward_proxy():
    proxy = _ForwardProxy()
    yield proxy
    proxy.close()


def test_the_proxy_of_the_environment_carries_every_request(sandbox, forward_proxy, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = GravityClient(sandbox.url, sandbox.api_key, retry=FAST_RETRY, timeout=5)
    try:
        first = client.send_events(make_events(3, prefix="proxied"))
        second = client.send_events(make_events(2, prefix="proxied-again"))
    finally:
        client.close()

    assert [r.status for r in first + second] == ["ok"] * 5
    assert forward_proxy.relayed == [f"POST {sandbox.url}/gateway/events"] * 2
    monkeypatch.delenv("HTTP_PROXY")  # the sandbox's own stats are read straight
    assert sandbox.stats()["requests"] == 2


def test_no_proxy_sends_straight_to_gravity(sandbox, forward_proxy, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    client = GravityClient(sandbox.url, sandbox.api_key, retry=FAST_RETRY, timeout=5)
    try:
        results = client.send_events(make_events(2, prefix="direct"))
    finally:
        client.close()

    assert [r.status for r in results] == ["ok", "ok"]
    assert forward_proxy.relayed == []
    monkeypatch.delenv("HTTP_PROXY")
    assert sandbox.stats()["requests"] == 1
