"""The local Gravity sandbox over real HTTP, driven with plain ``requests``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import pytest
import requests

from tests.support.sandbox_server import REPO_ROOT, SandboxServer

HOUR = 3600


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_event(event_id: str = "order-1", **fields: object) -> dict:
    event = {
        "event_name": "Purchase",
        "event_time": int(time.time()) - HOUR,
        "event_id": event_id,
        "action_source": "physical_store",
        "user_data": {"em": [sha256("ann@example.com")], "external_id": ["cust-42"]},
        "custom_data": {"value": 129.99, "currency": "USD", "order_id": "10023"},
    }
    event.update(fields)
    return event


def post(sandbox: SandboxServer, body: object, headers: dict | None = None, timeout: float = 10) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = sandbox.auth_headers() if headers is None else headers
    return requests.post(
        sandbox.url + "/gateway/events",
        data=data,
        headers={"Content-Type": "application/json", **headers},
        timeout=timeout,
    )


def send(sandbox: SandboxServer, *events: dict) -> list[dict]:
    response = post(sandbox, {"data": list(events)})
    assert response.status_code == 200, response.text
    return response.json()["results"]


# --- auth and envelope --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"X-API-Key": "wrong-key"},
        {"Authorization": "Basic c2FuZGJveC10ZXN0LWtleQ=="},
    ],
    ids=["no-key", "wrong-bearer", "wrong-x-api-key", "not-bearer-scheme"],
)
def test_a_missing_or_wrong_key_gets_401_before_the_body_is_validated(sandbox, headers):
    response = post(sandbox, {"data": []}, headers=headers)

    assert response.status_code == 401
    assert response.json()["error"]
    assert sandbox.stats()["auth_failures"] == 1


@pytest.mark.parametrize("header_style", ["Authorization", "X-API-Key"])
def test_both_header_styles_are_accepted(sandbox, header_style):
    value = f"Bearer {sandbox.api_key}" if header_style == "Authorization" else sandbox.api_key

    response = post(sandbox, {"data": [make_event()]}, headers={header_style: value})

    assert response.status_code == 200
    assert response.json() == {"results": [{"event_id": "order-1", "status": "ok", "attributed": False}]}


def test_an_authenticated_empty_batch_is_400_which_is_how_a_connection_test_tells_a_good_key(sandbox):
    response = post(sandbox, {"data": []})

    assert response.status_code == 400
    assert "at least one event" in response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b'{"data": [NaN]}',
        b"[]",
        b'{"events": []}',
        b'{"data": {"event_id": "x"}}',
        json.dumps({"data": [make_event()], "test_event_code": "T1"}).encode(),
    ],
    ids=["bad-json", "empty-body", "nan", "array", "no-data", "data-not-list", "unknown-top-level-key"],
)
def test_malformed_envelopes_are_400_and_process_nothing(sandbox, body):
    response = post(sandbox, body)

    assert response.status_code == 400
    assert response.json()["error"]
    assert sandbox.stats()["events_received"] == 0


def test_1000_events_are_accepted_and_1001_are_413(sandbox):
    events = [make_event(f"order-{i}") for i in range(1001)]

    too_many = post(sandbox, {"data": events})
    accepted = post(sandbox, {"data": events[:1000]})

    assert too_many.status_code == 413
    assert "1000" in too_many.json()["error"]
    assert accepted.status_code == 200
    assert [r["status"] for r in accepted.json()["results"]] == ["ok"] * 1000
    stats = sandbox.stats()
    assert (stats["largest_batch"], stats["unique_events"], stats["requests"]) == (1000, 1000, 2)


# --- per-event validation -----------------------------------------------------------------------

NOW = int(time.time())
INVALID_EVENTS = [
    (make_event("t-float", event_time=float(NOW - HOUR)), "event_time must be Unix seconds"),
    (make_event("t-string", event_time=str(NOW - HOUR)), "event_time must be Unix seconds"),
    (make_event("t-bool", event_time=True), "event_time must be Unix seconds"),
    (make_event("t-millis", event_time=(NOW - HOUR) * 1000), "milliseconds"),
    (make_event("t-future", event_time=NOW + HOUR), "future"),
    (make_event("name-empty", event_name=""), "event_name"),
    (make_event(" padded-id "), "whitespace"),
    ({k: v for k, v in make_event().items() if k != "event_id"}, "event_id must be a non-empty string"),
    (make_event("unknown-key", evnt_name="Purchase"), "unknown event key 'evnt_name'"),
    (make_event("source-int", action_source=5), "action_source"),
    (make_event("url-list", event_source_url=["x"]), "event_source_url"),
    (make_event("em-string", user_data={"em": sha256("a@b.c")}), "user_data.em"),
    (make_event("em-empty-item", user_data={"em": [""]}), "user_data.em"),
    (make_event("ph-empty-list", user_data={"ph": []}), "user_data.ph"),
    (make_event("xid-int", user_data={"external_id": [42]}), "user_data.external_id"),
    (make_event("fn-int", user_data={"fn": 5}), "user_data.fn"),
    (make_event("click-null", user_data={"click_id": None}), "user_data.click_id"),
    (make_event("ud-typo", user_data={"emial": ["x"]}), "unknown key 'emial'"),
    (make_event("ud-list", user_data=[]), "user_data must be an object"),
    (make_event("ctx-string", client_context="macOS"), "client_context"),
    (make_event("value-negative", custom_data={"value": -1}), "custom_data.value"),
    (make_event("value-bool", custom_data={"value": True}), "custom_data.value"),
    (make_event("value-string", custom_data={"value": "12.50"}), "custom_data.value"),
    (make_event("currency-lower", custom_data={"currency": "usd"}), "currency"),
    (make_event("currency-short", custom_data={"currency": "US"}), "currency"),
    (make_event("order-id-int", custom_data={"order_id": 10023}), "order_id"),
    (make_event("contents-no-id", custom_data={"contents": [{"quantity": 1}]}), "contents[].id"),
    (make_event("contents-neg-qty", custom_data={"contents": [{"id": "a", "quantity": -1}]}), "quantity"),
    (make_event("contents-float-qty", custom_data={"contents": [{"id": "a", "quantity": 1.5}]}), "quantity"),
    (
        make_event("contents-str-price", custom_data={"contents": [{"id": "a", "item_price": "9"}]}),
        "item_price",
    ),
    (make_event("contents-object", custom_data={"contents": {"id": "a"}}), "contents"),
    ("not-an-object", "event must be a JSON object"),
]
VALID_EVENTS = [
    make_event("no-match-keys", user_data={}),
    {k: v for k, v in make_event("minimal").items() if k in ("event_name", "event_time", "event_id")},
    make_event("near-future", event_time=NOW + 120),
    make_event("custom-extra", custom_data={"value": 0, "currency": "EUR", "coupon": "X", "contents": []}),
    make_event(
        "full",
        event_source_url="https://shop.example.com/thank-you",
        client_context={"timezone": "America/New_York", "screen": {"w": 1}, "anything": [1, 2]},
        user_data={
            "em": [sha256("a@b.c")],
            "ph": [sha256("15551234567")],
            "fn": sha256("ann"),
            "ln": sha256("lee"),
            "external_id": ["cust-42"],
            "visitor_id": "v1",
            "session_id": "s1",
            "client_user_agent": "Mozilla/5.0",
            "grclid": "g1",
        },
        custom_data={"value": 12, "contents": [{"id": "sku-1", "quantity": 0, "item_price": 49.99}]},
    ),
]


def test_each_event_is_validated_independently_with_results_in_request_order(sandbox):
    # Interleave valid and invalid events so that an order mix-up cannot go unnoticed.
    batch, expected = [], []
    for index, (invalid, fragment) in enumerate(INVALID_EVENTS):
        batch.append(invalid)
        expected.append(("error", fragment))
        if index < len(VALID_EVENTS):
            batch.append(VALID_EVENTS[index])
            expected.append(("ok", None))

    results = send(sandbox, *batch)

    assert len(results) == len(batch)
    for event, result, (status, fragment) in zip(batch, results, expected, strict=True):
        sent_id = event.get("event_id") if isinstance(event, dict) else None
        assert result["event_id"] == sent_id
        assert result["status"] == status, (sent_id, result)
        if fragment:
            assert fragment in result["error"], (sent_id, result)
    stats = sandbox.stats()
    assert stats["by_status"] == {"ok": len(VALID_EVENTS), "duplicate": 0, "error": len(INVALID_EVENTS)}
    assert {e["event_id"] for e in sandbox.events()} == {e["event_id"] for e in VALID_EVENTS}


def test_attributed_is_true_only_with_a_click_id(sandbox):
    with_click = make_event("clicked", user_data={"click_id": "c-1"})

    results = send(sandbox, with_click, make_event("organic"))

    assert [r["attributed"] for r in results] == [True, False]


# --- dedup ---------------------------------------------------------------------------------------


def test_a_resend_within_48h_is_a_duplicate_and_one_after_49h_counts_again(sandbox):
    event = make_event("order-7")

    first = send(sandbox, event)
    same_batch_twice = send(sandbox, event, event)
    sandbox.advance_clock(hours=47)
    at_47h = send(sandbox, event)
    stats_within_window = sandbox.stats()
    sandbox.advance_clock(hours=2)
    at_49h = send(sandbox, event)

    assert first[0]["status"] == "ok"
    assert [r["status"] for r in same_batch_twice] == ["duplicate", "duplicate"]
    assert at_47h[0]["status"] == "duplicate"
    assert stats_within_window["redelivered"] == 0
    assert stats_within_window["max_deliveries_of_one_event"] == 1
    assert at_49h[0]["status"] == "ok"
    stats = sandbox.stats()
    assert (stats["redelivered"], stats["unique_events"], stats["max_deliveries_of_one_event"]) == (1, 1, 2)
    assert sandbox.deliveries("Purchase", "order-7") == 2
    assert len(sandbox.events()) == 2


def test_dedup_key_is_event_name_plus_event_id(sandbox):
    results = send(sandbox, make_event("order-8"), make_event("order-8", event_name="Lead"))

    assert [r["status"] for r in results] == ["ok", "ok"]
    assert sandbox.stats()["unique_events"] == 2


# --- PII -----------------------------------------------------------------------------------------


def test_plaintext_pii_is_counted_hashed_on_receipt_and_never_stored_or_logged(sandbox):
    plaintext = make_event(
        "order-pii",
        user_data={
            "em": [" Zoe.Plain@Example.com "],
            "ph": ["+1 (555) 010-9999"],
            "fn": "Zoé",
            "ln": "Quist",
        },
    )
    wrong_shape = make_event("order-pii-bad", user_data={"em": "wrongshape.plain@example.com"})

    results = send(sandbox, plaintext, wrong_shape)

    assert [r["status"] for r in results] == ["ok", "error"]
    assert "plain" not in json.dumps(results).lower()
    assert sandbox.stats()["plaintext_pii_seen"] == 5
    (stored,) = sandbox.events()
    assert stored["user_data"]["em"] == [sha256("zoe.plain@example.com")]
    assert stored["user_data"]["ph"] == [sha256("15550109999")]
    assert all(len(value) == 64 for value in (stored["user_data"]["fn"], stored["user_data"]["ln"]))
    exposed = json.dumps(sandbox.events()) + sandbox.log_text()
    for clear_text in ("Zoe.Plain", "zoe.plain", "wrongshape", "010-9999", "0109999", "Zoé", "Quist"):
        assert clear_text not in exposed
    assert sandbox.api_key not in sandbox.log_text()


def test_already_hashed_values_are_stored_lowercased_and_not_counted_as_plaintext(sandbox):
    digest = sha256("ann@example.com")
    event = make_event("order-hex", user_data={"em": [digest.upper()], "fn": digest.upper()})

    send(sandbox, event)

    (stored,) = sandbox.events()
    assert stored["user_data"]["em"] == [digest]
    assert stored["user_data"]["fn"] == digest
    assert sandbox.stats()["plaintext_pii_seen"] == 0


# --- faults --------------------------------------------------------------------------------------


def test_status_fault_answers_429_with_retry_after_then_heals(sandbox):
    sandbox.faults({"kind": "status", "status": 429, "retry_after": "1", "count": 2})

    statuses = [post(sandbox, {"data": [make_event()]}) for _ in range(3)]

    assert [r.status_code for r in statuses] == [429, 429, 200]
    assert [r.headers.get("Retry-After") for r in statuses[:2]] == ["1", "1"]
    stats = sandbox.stats()
    assert (stats["requests"], stats["faults_served"], stats["events_received"]) == (3, 2, 1)


def test_status_fault_passes_an_http_date_retry_after_verbatim_and_honours_after(sandbox):
    date = "Wed, 21 Oct 2037 07:28:00 GMT"
    sandbox.faults({"kind": "status", "status": 503, "retry_after": date, "after": 1})

    statuses = [post(sandbox, {"data": [make_event()]}) for _ in range(3)]

    assert [r.status_code for r in statuses] == [200, 503, 200]
    assert statuses[1].headers["Retry-After"] == date
    assert requests.get(sandbox.url + "/sandbox/faults", timeout=5).json()["queue"] == []


def test_drop_fault_breaks_the_connection_before_processing(sandbox):
    sandbox.faults({"kind": "drop"})

    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        post(sandbox, {"data": [make_event()]})
    retried = send(sandbox, make_event())

    assert retried[0]["status"] == "ok"
    assert sandbox.stats()["faults_served"] == 1


def test_drop_fault_with_process_loses_only_the_acknowledgement(sandbox):
    sandbox.faults({"kind": "drop", "process": True})

    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        post(sandbox, {"data": [make_event()]})
    retried = send(sandbox, make_event())

    assert retried[0]["status"] == "duplicate"
    assert sandbox.stats()["max_deliveries_of_one_event"] == 1


def test_slow_fault_delays_then_processes(sandbox):
    sandbox.faults({"kind": "slow", "seconds": 1})

    started = time.monotonic()
    results = send(sandbox, make_event())

    assert time.monotonic() - started >= 1
    assert results[0]["status"] == "ok"


def test_stall_fault_hangs_until_the_client_times_out(sandbox):
    sandbox.faults({"kind": "stall"})

    with pytest.raises(requests.exceptions.ReadTimeout):
        post(sandbox, {"data": [make_event()]}, timeout=1)
    after = send(sandbox, make_event())

    assert after[0]["status"] == "ok"


def test_poison_refuses_any_batch_holding_the_id_until_reset(sandbox):
    sandbox.faults({"kind": "poison", "event_ids": ["bad-1"]})

    poisoned = post(sandbox, {"data": [make_event("good-1"), make_event("bad-1")]})
    healthy = post(sandbox, {"data": [make_event("good-1")]})
    still_poisoned = post(sandbox, {"data": [make_event("bad-1")]})
    sandbox.reset()
    after_reset = post(sandbox, {"data": [make_event("bad-1")]})

    assert (poisoned.status_code, poisoned.json()) == (400, {"error": "invalid event(s) in batch"})
    assert healthy.status_code == 200
    assert still_poisoned.status_code == 400
    assert after_reset.status_code == 200


def test_a_malformed_fault_spec_is_refused(sandbox):
    response = requests.post(sandbox.url + "/sandbox/faults", json={"faults": [{"kind": "explode"}]}, timeout=5)

    assert response.status_code == 400
    assert "kind" in response.json()["error"]


# --- control endpoints, CLI, independence ---------------------------------------------------------


def test_reset_clears_events_counters_faults_and_clock(sandbox):
    send(sandbox, make_event())
    sandbox.faults({"kind": "status", "status": 500, "count": 5}, {"kind": "poison", "event_ids": ["x"]})
    sandbox.advance_clock(hours=100)

    sandbox.reset()

    stats = sandbox.stats()
    assert stats["requests"] == stats["unique_events"] == stats["faults_served"] == 0
    assert sandbox.events() == []
    assert requests.get(sandbox.url + "/sandbox/faults", timeout=5).json() == {
        "queue": [],
        "poisoned_event_ids": [],
    }
    assert abs(sandbox.now() - time.time()) < 60
    assert send(sandbox, make_event())[0]["status"] == "ok"


def test_clock_can_be_set(sandbox):
    assert sandbox.set_clock(2_000_000_000) == pytest.approx(2_000_000_000, abs=5)
    assert sandbox.now() == pytest.approx(2_000_000_000, abs=5)


def test_each_request_logs_one_line_of_counts(sandbox):
    send(sandbox, make_event("log-1"), make_event("log-1"), make_event("log-2", event_time="x"))

    deadline = time.monotonic() + 5
    while "events=3 ok=1 duplicate=1 error=1" not in sandbox.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "POST /gateway/events 200 events=3 ok=1 duplicate=1 error=1 plaintext_pii=0" in sandbox.log_text()


def test_options_auth_header_age_limit_window_and_no_store():
    options = ["--auth-header", "bearer", "--max-event-age-days", "7", "--dedup-window-hours", "1"]
    with SandboxServer(api_key="other-key", extra_args=[*options, "--no-store-events"]) as server:
        x_api_key = post(server, {"data": [make_event()]}, headers={"X-API-Key": "other-key"})
        results = send(server, make_event("fresh"), make_event("old", event_time=int(time.time()) - 8 * 86400))
        server.advance_clock(hours=1, seconds=1)
        again = send(server, make_event("fresh"))
        stats, events = server.stats(), server.events()

    assert x_api_key.status_code == 401
    assert [r["status"] for r in results] == ["ok", "error"]
    assert "older" in results[1]["error"]
    assert again[0]["status"] == "ok"
    assert (stats["unique_events"], stats["redelivered"], events) == (1, 1, [])


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "airflow_provider_gravity.sandbox", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
    )


def test_help_documents_the_options():
    result = run_cli("--help")

    assert result.returncode == 0
    for option in ("--api-key", "--dedup-window-hours", "--max-event-age-days", "--no-store-events"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0", "--api-key", "k"], "refusing to bind non-loopback host"),
        (["--port", "1"], "API key is required"),
    ],
)
def test_cli_refuses_unsafe_or_incomplete_configurations(args, message):
    result = run_cli(*args)

    assert result.returncode == 2
    assert message in result.stderr


def test_the_sandbox_imports_nothing_from_the_client_side():
    probe = (
        "import sys\n"
        "import airflow_provider_gravity.sandbox.__main__, airflow_provider_gravity.sandbox.app\n"
        "from airflow_provider_gravity.sandbox import create_app\n"
        "create_app('k')\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    modules = result.stdout.split()

    assert "airflow_provider_gravity.sandbox.app" in modules
    client_side = ("airflow_provider_gravity.conversions", "airflow_provider_gravity.hooks")
    client_side += ("airflow_provider_gravity.operators", "airflow")
    leaked = [m for m in modules if m in client_side or m.startswith(tuple(p + "." for p in client_side))]
    assert leaked == []


def test_create_app_serves_in_process_on_an_injected_clock():
    import threading

    import uvicorn

    from airflow_provider_gravity.sandbox import create_app
    from tests.support.sandbox_server import free_loopback_port

    fake_now = [1_000_000_000.0]  # September 2001
    app = create_app("in-process-key", clock=lambda: fake_now[0])
    port = free_loopback_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/gateway/events"
        headers = {"X-API-Key": "in-process-key"}
        then = make_event("in-2001", event_time=999_999_000)
        today = make_event("today", event_time=int(time.time()))
        first = requests.post(url, json={"data": [then, today]}, headers=headers, timeout=5).json()["results"]
        fake_now[0] += 49 * HOUR
        again = requests.post(url, json={"data": [then]}, headers=headers, timeout=5).json()["results"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)

    assert [r["status"] for r in first] == ["ok", "error"]
    assert "future" in first[1]["error"]
    assert again[0]["status"] == "ok"
    assert app.state.sandbox.stats()["redelivered"] == 1
