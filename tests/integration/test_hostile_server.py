"""
The real client, pipeline and operator against a hostile Gravity (tests/support/hostile_server.py) over loopback HTTP:
redirects, stray statuses, answers that omit, invent, repeat, shuffle or strip results, HTML, huge bodies, JSON
nested a thousand levels deep and API keys echoed back. The guarantees must hold anyway: every row in one bucket,
nothing counted twice across a failed run and its retry, no redirect followed, and the key nowhere.
"""

from __future__ import annotations

import json
import logging
import time
import tracemalloc
from collections import Counter
from urllib.parse import quote

import pandas as pd
import pytest
import sqlalchemy as sa

from airflow_provider_gravity.conversions.api.client import GravityClient, RetryPolicy
from airflow_provider_gravity.conversions.errors import (
    GravityAuthError,
    GravityHTTPError,
    GravityRedirectError,
    GravityRequestRejected,
    GravityResponseError,
    GravityUnavailableError,
)
from airflow_provider_gravity.conversions.events.build import EventSettings
from airflow_provider_gravity.conversions.run.delivery_log import DeliveryLog
from airflow_provider_gravity.conversions.run.pipeline import ConversionPipeline, RunFailure
from airflow_provider_gravity.conversions.run.resume import STATE_KEY, ResumeLog
from tests.support.airflow_fixtures import run_dag_test, single_task_dag, task_states
from tests.support.hostile_server import (
    KEY_DISGUISES,
    MIB,
    REDIRECT_STATUSES,
    HostileGravity,
    Mode,
    duplicate,
    echo_key,
    extra,
    honest,
    html,
    huge,
    nested_json,
    omit,
    redirect,
    refuse,
    reorder,
    status,
    strip_ids,
)
from tests.support.key_forms import key_leaks as leaked_forms
from tests.support.sandbox_server import gravity_connection_json
from tests.support.state_store import DictStore

# Upper and lower case, and characters that URL-encoding changes, so that every disguise of it differs.
API_KEY = "sk_Live-Hostile+Key/42=x"
FAST_RETRY = RetryPolicy(max_retries=2, backoff_base=0.01)
BUCKETS = ("delivered", "duplicate", "rejected", "invalid", "skipped_delivered", "undelivered")
TRANSIENT_STATUSES = (408, 429, 500, 501, 502, 503, 504, 520, 521, 522, 523, 524, 599)
# Issue 17: JSON nested about 1,000 levels (2 KB) made the decoder raise RecursionError, which stopped the run
# as "sending a batch failed" (not retried) and kept a refused batch from being split. Deeper than the decoder's
# recursion limit, far deeper, and shallow enough to decode but deeper than any answer of Gravity's (32 levels).
DEEP_BODIES = {
    "arrays-1000": nested_json(1000),
    "objects-1000": nested_json(1000, "object"),
    "arrays-100000": nested_json(100_000),
    "results-1000": '{"results": ' + nested_json(1000) + "}",
    "error-1000": '{"error": ' + nested_json(1000) + "}",
    "error-40": '{"error": ' + nested_json(40, "object", '"bad event"') + "}",
}
# A 200 for the events o20..o29 whose results look right but one of which nests its error 40 levels deep.
DEEP_RESULTS = json.dumps(
    {
        "results": [{"event_id": f"o{i}", "status": "ok"} for i in range(20, 29)]
        + [{"event_id": "o29", "status": "error"}]
    }
).replace('"status": "error"}', '"status": "error", "error": ' + nested_json(40) + "}")
FINAL_STATUSES = (404, 405, 406, 409, 410, 418, 451)
BATCH_REJECTED = (400, 413, 422)


@pytest.fixture
def gravity():
    """The hostile Gravity; honest until a test queues or sets other modes."""
    with HostileGravity(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def elsewhere():
    """A second server on another loopback host: where redirects point. It must never hear from the client."""
    with HostileGravity(host="127.0.0.2") as server:
        yield server


@pytest.fixture
def client(gravity):
    client = GravityClient(gravity.url, API_KEY, retry=FAST_RETRY, timeout=10)
    yield client
    client.close()


@pytest.fixture
def delivery_log(tmp_path):
    engine = sa.create_engine("sqlite:///" + str(tmp_path / "delivery_log.db"))
    log = DeliveryLog(engine, "gravity_delivery_log")
    log.ensure_table()
    yield log
    engine.dispose()


def make_events(count: int, prefix: str = "o") -> list[dict]:
    when = int(time.time()) - 3600
    return [{"event_name": "Purchase", "event_time": when, "event_id": f"{prefix}{i}"} for i in range(count)]


def make_frame(count: int, prefix: str = "o") -> pd.DataFrame:
    return pd.DataFrame({"event_id": [f"{prefix}{i}" for i in range(count)], "event_time": int(time.time()) - 3600})


def make_pipeline(client: GravityClient, *, store=None, delivery_log=None, batch_size=10, max_concurrency=1):
    return ConversionPipeline(
        settings=EventSettings(event_name="Purchase"),
        sender=client,
        batch_size=batch_size,
        max_concurrency=max_concurrency,
        delivery_log=delivery_log,
        resume=ResumeLog(store, "fingerprint") if store is not None else None,
    )


def assert_every_row_in_one_bucket(summary: dict, rows: int) -> None:
    assert summary["rows_read"] == rows
    assert sum(summary[bucket] for bucket in BUCKETS) == rows, {bucket: summary[bucket] for bucket in BUCKETS}


def key_leaks(text: str, key: str = API_KEY) -> list[str]:
    """
    The forms of ``key`` found in ``text``, case-insensitively: as is, any 8-character stretch, hex, base64 at
    each alignment, each also URL-encoded or JSON-escaped (tests/support/key_forms.py).
    """
    return leaked_forms(text, key)


def log_text(caplog) -> str:
    """Every log record of the test, formatted (with tracebacks) and as its bare message."""
    return "\n".join([caplog.text, *(record.getMessage() for record in caplog.records)])


def logged(delivery_log: DeliveryLog) -> dict[tuple[str, str], tuple[str, str | None]]:
    """The delivery log's rows: ``(event_name, event_id) -> (status, detail)``."""
    table = delivery_log.table
    with delivery_log.engine.connect() as connection:
        rows = connection.execute(sa.select(table.c.event_name, table.c.event_id, table.c.status, table.c.detail))
        return {(name, event_id): (status_, detail) for name, event_id, status_, detail in rows}


def purchase_keys(event_ids) -> set[tuple[str, str]]:
    return {("Purchase", event_id) for event_id in event_ids}


def assert_accepted_at_most_once(gravity: HostileGravity) -> None:
    twice = {key: count for key, count in gravity.accepted.items() if count > 1}
    assert not twice, f"acknowledged as ok more than once: {twice}"


# The client on its own


def test_an_honest_server_gets_the_events_and_the_key_of_each_request(client, gravity):
    events = make_events(5)

    results = client.send_events(events)

    assert [(r.event_id, r.status) for r in results] == [(f"o{i}", "ok") for i in range(5)]
    (request,) = gravity.event_requests
    assert request.events == events
    assert request.credential == API_KEY
    assert gravity.accepted == Counter(purchase_keys(f"o{i}" for i in range(5)))


@pytest.mark.parametrize("auth_header", ["bearer", "x-api-key"])
@pytest.mark.parametrize("code", REDIRECT_STATUSES)
def test_a_redirect_is_never_followed_and_the_error_names_its_host_not_the_key(gravity, elsewhere, code, auth_header):
    gravity.default = redirect(f"{elsewhere.url}/gateway/events?api_key={quote(API_KEY, safe='')}", code)
    client = GravityClient(gravity.url, API_KEY, auth_header=auth_header, retry=FAST_RETRY)

    with pytest.raises(GravityRedirectError) as raised:
        client.send_events(make_events(3))

    assert isinstance(raised.value, GravityHTTPError)
    assert "127.0.0.2" in str(raised.value)
    assert not key_leaks(str(raised.value))
    assert len(gravity.requests) == 1, "a redirect is not retried either"
    assert elsewhere.requests == [], "the redirect target got a request"
    assert elsewhere.credentials_seen() == []


def test_a_redirect_to_a_remote_host_names_that_host_and_sends_nothing_there(gravity, client):
    gravity.default = redirect(f"https://collector.evil.example:8443/steal?token={API_KEY}", 302)

    with pytest.raises(GravityRedirectError) as raised:
        client.send_events(make_events(2))

    assert "collector.evil.example" in str(raised.value)
    assert not key_leaks(str(raised.value))
    assert len(gravity.requests) == 1


def test_the_connection_check_does_not_follow_a_redirect_either(gravity, elsewhere):
    gravity.default = redirect(f"{elsewhere.url}/gateway/events", 307)
    client = GravityClient(gravity.url, API_KEY, auth_header="x-api-key", retry=FAST_RETRY)

    ok, message = client.check_connection()

    assert ok is False
    assert "127.0.0.2" in message and not key_leaks(message)
    assert elsewhere.requests == []


@pytest.mark.parametrize("code", [300, 303, 305, 306])
def test_any_3xx_even_without_a_location_is_a_redirect_error(client, gravity, code):
    gravity.default = status(code, "")

    with pytest.raises(GravityRedirectError):
        client.send_events(make_events(2))

    assert len(gravity.requests) == 1


def test_a_redirect_whose_host_is_made_of_the_key_does_not_name_the_key(gravity):
    key = "sk-live-hostile-key-42"
    gravity.default = redirect(f"https://{key.swapcase()}.collector.example/gateway/events", 307)
    client = GravityClient(gravity.url, key, retry=FAST_RETRY)

    with pytest.raises(GravityRedirectError) as raised:
        client.send_events(make_events(1))

    assert "collector.example" in str(raised.value)
    assert not key_leaks(str(raised.value), key), str(raised.value)


@pytest.mark.parametrize("code", TRANSIENT_STATUSES)
def test_transient_statuses_are_retried_and_then_give_up_as_unavailable(client, gravity, code):
    gravity.queue(status(code), times=2)
    assert all(r.status == "ok" for r in client.send_events(make_events(2)))
    assert len(gravity.requests) == 3, "two failures, then the answer"

    gravity.default = status(code, "overloaded")
    with pytest.raises(GravityUnavailableError) as raised:
        client.send_events(make_events(2, prefix="p"))

    assert raised.value.attempts == 3
    assert raised.value.last_status == code
    assert len(gravity.requests) == 6


@pytest.mark.parametrize("code", FINAL_STATUSES)
def test_other_statuses_fail_at_once_as_an_http_error(client, gravity, code):
    gravity.default = status(code, "not here")

    with pytest.raises(GravityHTTPError) as raised:
        client.send_events(make_events(2))

    assert type(raised.value) is GravityHTTPError, "not a refused batch, a bad key nor a redirect"
    assert raised.value.status == code
    assert len(gravity.requests) == 1


def test_html_with_200_is_a_response_error(client, gravity):
    gravity.default = html()

    with pytest.raises(GravityResponseError):
        client.send_events(make_events(2))

    assert len(gravity.requests) == 1


@pytest.mark.parametrize("body", list(DEEP_BODIES.values()), ids=list(DEEP_BODIES))
def test_a_deeply_nested_200_is_not_gravitys_answer(client, gravity, body):
    gravity.default = status(200, body)

    with pytest.raises(GravityResponseError, match="not Gravity's answer") as raised:
        client.send_events(make_events(2))

    assert type(raised.value.__cause__) is not RecursionError
    assert len(gravity.requests) == 1


@pytest.mark.parametrize("body", list(DEEP_BODIES.values()), ids=list(DEEP_BODIES))
@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (400, GravityRequestRejected),
        (413, GravityRequestRejected),
        (422, GravityRequestRejected),
        (401, GravityAuthError),
        (404, GravityHTTPError),
        (503, GravityUnavailableError),
    ],
)
def test_a_deeply_nested_error_answer_is_read_as_its_status_says(client, gravity, body, code, error_class):
    gravity.default = status(code, body)

    with pytest.raises(error_class) as raised:
        client.send_events(make_events(2))

    assert type(raised.value) is error_class
    assert len(str(raised.value)) < 500, "the answer's text is cut, however deep it is"
    assert len(gravity.requests) == (FAST_RETRY.max_retries + 1 if code == 503 else 1)


@pytest.mark.parametrize(
    "mode",
    [huge(64 * MIB), huge(64 * MIB, chunked=True), huge(64 * MIB, gzip=True)],
    ids=["content-length", "chunked", "gzip-bomb"],
)
def test_a_huge_body_is_refused_without_being_held_in_memory(client, gravity, mode):
    gravity.default = mode
    events = make_events(2)

    tracemalloc.start()
    try:
        with pytest.raises(GravityResponseError):
            client.send_events(events)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 40 * MIB, f"peak {peak / MIB:.0f} MiB while refusing a 64 MiB answer"


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (400, GravityRequestRejected),
        (401, GravityAuthError),
        (403, GravityAuthError),
        (404, GravityHTTPError),
        (500, GravityUnavailableError),
        (307, GravityRedirectError),
    ],
)
def test_a_key_echoed_in_an_error_answer_is_in_no_exception(client, gravity, caplog, code, error_class):
    caplog.set_level(logging.DEBUG)
    gravity.default = echo_key(batch_status=code, headers={"Location": f"http://127.0.0.2:1/?k={API_KEY}"})

    with pytest.raises(error_class) as raised:
        client.send_events(make_events(1))

    texts = [str(raised.value), repr(raised.value), *map(str, raised.value.args), str(vars(raised.value))]
    assert not key_leaks("\n".join(texts))
    assert not key_leaks(log_text(caplog))


@pytest.mark.parametrize("disguise", KEY_DISGUISES)
def test_each_disguise_of_an_echoed_key_is_scrubbed(client, gravity, disguise):
    gravity.queue(echo_key(disguise=disguise), echo_key(batch_status=404, disguise=disguise))

    (result,) = client.send_events(make_events(1))
    with pytest.raises(GravityHTTPError) as raised:
        client.send_events(make_events(1))

    assert "***" in result.error
    assert not key_leaks(result.error), result.error
    assert not key_leaks(str(raised.value)), str(raised.value)


def test_per_event_errors_echoing_the_key_are_scrubbed(client, gravity):
    gravity.default = echo_key(event_ids=["o1"])

    results = client.send_events(make_events(3))

    assert [r.status for r in results] == ["ok", "error", "ok"]
    assert "***" in results[1].error
    assert not key_leaks(repr(results))


# The pipeline


@pytest.mark.parametrize(
    "mode",
    [
        omit(["o13", "o17"]),
        extra(replace=["o13", "o17"]),
        extra(replace=["o13", "o17"], with_names=True),
        strip_ids(["o13", "o17"]),
        duplicate(["o13", "o17"]),
        duplicate(["o13", "o17"], with_names=True),
        duplicate(["o13", "o17"], with_names=True, nameless_copy=True),
    ],
    ids=[
        "omit",
        "unknown-ids",
        "unknown-ids-with-names",
        "strip-ids",
        "conflicting",
        "conflicting-with-names",
        "conflicting-copy-without-name",
    ],
)
def test_events_without_a_trustworthy_result_are_undelivered_and_the_retry_sends_only_them(client, gravity, mode: Mode):
    store = DictStore()
    gravity.queue(honest(), mode)

    first = make_pipeline(client, store=store).run([make_frame(30)])

    assert isinstance(first.failure, RunFailure)
    summary = first.summary
    assert_every_row_in_one_bucket(summary, 30)
    assert (summary["delivered"], summary["undelivered"]) == (28, 2)
    assert summary["events_sent"] == 30, "every event of a request answered 2xx was sent"
    assert first.failure.retryable
    assert "2 events got no result" in first.failure.message
    assert STATE_KEY in store.values, "the progress is kept for the retry"
    sent_by_first = len(gravity.sent_event_ids())

    second = make_pipeline(client, store=store).run([make_frame(30)])

    assert gravity.sent_event_ids()[sent_by_first:] == ["o13", "o17"]
    assert second.failure is None
    assert_every_row_in_one_bucket(second.summary, 30)
    assert second.summary["delivered"] == 30
    assert STATE_KEY not in store.values
    assert_accepted_at_most_once(gravity)
    assert set(gravity.accepted) == purchase_keys(f"o{i}" for i in range(30))


@pytest.mark.parametrize(
    "mode",
    [extra(count=3), extra(count=3, with_names=True), duplicate(count=3, conflicting=False), reorder()],
    ids=["unknown-ids", "unknown-ids-with-names", "identical-repeats", "shuffled"],
)
def test_harmless_oddities_of_an_answer_change_nothing(client, gravity, mode):
    gravity.default = mode

    result = make_pipeline(client).run([make_frame(30)])

    assert result.failure is None
    assert result.summary["delivered"] == 30
    assert result.summary["events_sent"] == 30
    assert_accepted_at_most_once(gravity)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "null",
        "[]",
        '{"results": null}',
        '{"results": "ok"}',
        '{"results": {"o10": "ok"}}',
        '{"results": [null, 1, "ok"]}',
        '{"results": [{"event_id": {"id": "o10"}, "status": "ok"}]}',
        '{"results": [{"event_id": "o10", "status": "ok"}',
        "\ufeff{not json at all",
        *DEEP_BODIES.values(),
        DEEP_RESULTS,
    ],
)
def test_a_200_that_is_not_gravitys_answer_leaves_its_events_undelivered_for_the_retry(client, gravity, body):
    store = DictStore()
    gravity.queue(honest(), honest(), status(200, body))  # the last of the three batches gets the odd answer

    first = make_pipeline(client, store=store).run([make_frame(30)])

    assert first.failure is not None and first.failure.retryable
    assert_every_row_in_one_bucket(first.summary, 30)
    assert (first.summary["delivered"], first.summary["undelivered"]) == (20, 10)
    sent_by_first = len(gravity.sent_event_ids())

    second = make_pipeline(client, store=store).run([make_frame(30)])

    assert second.failure is None
    assert gravity.sent_event_ids()[sent_by_first:] == [f"o{i}" for i in range(20, 30)], "only the unanswered batch"
    assert second.summary["delivered"] == 30
    assert_accepted_at_most_once(gravity)
    assert len(gravity.accepted) == 30


@pytest.mark.parametrize("body", list(DEEP_BODIES.values()), ids=list(DEEP_BODIES))
@pytest.mark.parametrize("code", sorted(BATCH_REJECTED))
def test_a_batch_refused_with_a_deeply_nested_answer_is_split_until_the_bad_event_is_alone(
    client, gravity, delivery_log, code, body
):
    gravity.default = refuse(["o13"], body, code)

    result = make_pipeline(client, delivery_log=delivery_log).run([make_frame(30)])

    assert result.failure is None
    summary = result.summary
    assert_every_row_in_one_bucket(summary, 30)
    assert (summary["delivered"], summary["rejected"]) == (29, 1)
    state, detail = logged(delivery_log)[("Purchase", "o13")]
    assert state == "rejected"
    assert detail.startswith(f"HTTP {code}: ") and len(detail) < 320
    assert list(summary["rejected_errors"]) == [detail]
    assert_accepted_at_most_once(gravity)
    assert set(gravity.accepted) == purchase_keys(f"o{i}" for i in range(30) if i != 13)


@pytest.mark.parametrize("with_names", [False, True], ids=["by-id", "by-name-and-id"])
def test_shuffled_results_never_swap_outcomes(client, gravity, delivery_log, with_names):
    gravity.default = reorder(with_names=with_names, verdicts={"o3": "error", "o14": "duplicate", "o25": "error"})

    result = make_pipeline(client, delivery_log=delivery_log).run([make_frame(30)])

    assert result.failure is None
    summary = result.summary
    assert (summary["delivered"], summary["duplicate"], summary["rejected"]) == (27, 1, 2)
    statuses = {key: status_ for key, (status_, _) in logged(delivery_log).items()}
    assert statuses.pop(("Purchase", "o3")) == "rejected"
    assert statuses.pop(("Purchase", "o25")) == "rejected"
    assert statuses.pop(("Purchase", "o14")) == "duplicate"
    assert set(statuses.values()) == {"delivered"}


@pytest.mark.parametrize("with_names", [False, True], ids=["by-id", "by-name-and-id"])
def test_one_event_id_under_two_event_names_never_shares_a_request(client, gravity, delivery_log, with_names):
    gravity.default = reorder(with_names=with_names, verdicts={("Lead", "o3"): "error"})
    frame = pd.DataFrame(
        {
            "event_name": ["Purchase", "Lead", "Signup"] * 10,
            "event_id": [f"o{i // 3}" for i in range(30)],
            "event_time": int(time.time()) - 3600,
        }
    )

    result = make_pipeline(client, delivery_log=delivery_log).run([frame])

    for request in gravity.event_requests:
        ids = [event["event_id"] for event in request.events]
        assert len(ids) == len(set(ids)), f"one request holds an event_id twice: {sorted(ids)}"
    assert result.failure is None
    assert (result.summary["delivered"], result.summary["rejected"]) == (29, 1)
    statuses = logged(delivery_log)
    assert statuses[("Lead", "o3")][0] == "rejected"
    assert statuses[("Purchase", "o3")][0] == statuses[("Signup", "o3")][0] == "delivered"


def _redirect_away(elsewhere: HostileGravity | None) -> Mode:
    host = elsewhere.url if elsewhere else "https://collector.evil.example"
    return redirect(f"{host}/gateway/events?key={quote(API_KEY, safe='')}", 308)


@pytest.mark.parametrize(
    ("make_mode", "retryable"),
    [
        (_redirect_away, False),
        (lambda _: status(404), False),
        (lambda _: status(410, "<html>gone</html>"), False),
        (lambda _: status(401), False),
        (lambda _: status(503), True),
        (lambda _: status(522, ""), True),
        (lambda _: html(), True),
        (lambda _: huge(24 * MIB, chunked=True), True),
    ],
    ids=["redirect", "404", "410", "401", "503", "522", "html", "huge"],
)
def test_a_failure_mid_run_stops_sending_keeps_what_was_acknowledged_and_says_if_a_retry_helps(
    client, gravity, elsewhere, delivery_log, caplog, make_mode, retryable
):
    caplog.set_level(logging.DEBUG)
    store = DictStore()
    gravity.queue(honest(), times=3)
    gravity.default = make_mode(elsewhere)

    first = make_pipeline(client, store=store, delivery_log=delivery_log, max_concurrency=2).run([make_frame(200)])

    assert first.failure is not None
    assert first.failure.retryable is retryable
    assert not key_leaks(first.failure.message)
    if gravity.default.kind == "redirect":
        assert "127.0.0.2" in first.failure.message
    assert elsewhere.requests == []
    summary = first.summary
    assert_every_row_in_one_bucket(summary, 200)
    accepted = {event_id for _, event_id in gravity.accepted}
    assert len(accepted) >= 30
    assert summary["delivered"] == len(accepted)
    assert summary["undelivered"] == 200 - len(accepted)
    attempts = FAST_RETRY.max_retries + 1 if retryable else 1
    assert len(gravity.event_requests) <= 3 + (1 + 2 * 2) * attempts, "it stopped sending new batches"
    assert {key for key, (state, _) in logged(delivery_log).items() if state == "delivered"} == purchase_keys(accepted)
    assert not key_leaks(json.dumps(summary)) and not key_leaks(log_text(caplog))
    sent_by_first = len(gravity.sent_event_ids())

    gravity.default = honest()
    second = make_pipeline(client, store=store).run([make_frame(200)])

    resent = gravity.sent_event_ids()[sent_by_first:]
    assert sorted(resent) == sorted({f"o{i}" for i in range(200)} - accepted), "only what was not acknowledged"
    assert second.failure is None
    assert_every_row_in_one_bucket(second.summary, 200)
    assert second.summary["delivered"] == 200
    assert_accepted_at_most_once(gravity)
    assert len(gravity.accepted) == 200


@pytest.mark.parametrize("failing", [status(404), html()], ids=["404", "html"])
def test_batches_in_flight_when_a_run_fails_are_waited_for_and_recorded(client, gravity, delivery_log, failing):
    store = DictStore()
    gravity.default = honest(delay=0.3)
    gravity.queue(honest(delay=0.3), failing)

    first = make_pipeline(client, store=store, delivery_log=delivery_log, max_concurrency=3).run([make_frame(100)])

    assert first.failure is not None
    accepted = {event_id for _, event_id in gravity.accepted}
    assert len(accepted) >= 10, "the slow batch in flight when the run failed was answered"
    assert first.summary["delivered"] == len(accepted)
    assert {key for key, (state, _) in logged(delivery_log).items() if state == "delivered"} == purchase_keys(accepted)
    sent_by_first = len(gravity.sent_event_ids())
    gravity.default = honest()

    make_pipeline(client, store=store).run([make_frame(100)])

    assert sorted(gravity.sent_event_ids()[sent_by_first:]) == sorted({f"o{i}" for i in range(100)} - accepted)
    assert_accepted_at_most_once(gravity)


@pytest.mark.parametrize(
    ("failing", "attempts"),
    [(status(404), 1), (_redirect_away(None), 1), (html(), 1), (status(503), 3)],
    ids=["404", "redirect", "html", "503"],
)
def test_a_failure_while_a_refused_batch_is_split_keeps_the_half_already_acknowledged(
    client, gravity, delivery_log, failing, attempts
):
    store = DictStore()
    gravity.queue(status(400, '{"error": "one bad event"}'), honest())  # the batch refused whole, its first half ok
    gravity.queue(failing, times=attempts)  # ... and its second half fails

    first = make_pipeline(client, store=store, delivery_log=delivery_log).run([make_frame(20)])

    assert first.failure is not None
    assert_every_row_in_one_bucket(first.summary, 20)
    accepted = {event_id for _, event_id in gravity.accepted}
    assert {"o0", "o1", "o2", "o3", "o4"} <= accepted
    assert first.summary["delivered"] == len(accepted), "every event Gravity acknowledged is counted delivered"
    assert {key for key, (state, _) in logged(delivery_log).items() if state == "delivered"} == purchase_keys(accepted)
    sent_by_first = len(gravity.sent_event_ids())

    make_pipeline(client, store=store).run([make_frame(20)])

    assert sorted(gravity.sent_event_ids()[sent_by_first:]) == sorted({f"o{i}" for i in range(20)} - accepted)
    assert_accepted_at_most_once(gravity)


@pytest.mark.parametrize("disguise", [None, *KEY_DISGUISES], ids=["all", *KEY_DISGUISES])
def test_a_key_echoed_in_event_errors_and_refused_batches_is_scrubbed_everywhere(
    client, gravity, delivery_log, caplog, disguise
):
    """Issue 17: base64("t=" + KEY) in Gravity's error was stored whole in the delivery log and the summary."""
    caplog.set_level(logging.DEBUG)
    gravity.queue(echo_key(event_ids=["o1", "o2"], disguise=disguise))
    gravity.default = echo_key(event_ids=["o15"], batch_status=400, disguise=disguise)

    result = make_pipeline(client, delivery_log=delivery_log).run([make_frame(30)])

    summary = result.summary
    assert result.failure is None
    assert (summary["delivered"], summary["rejected"]) == (27, 3)
    assert sum(summary["rejected_errors"].values()) == 3
    assert all("***" in error for error in summary["rejected_errors"]), summary["rejected_errors"]
    details = {key: detail for key, (_, detail) in logged(delivery_log).items()}
    assert all("***" in details[key] for key in purchase_keys(["o1", "o2", "o15"]))
    assert not key_leaks(json.dumps(summary))
    assert not key_leaks("\n".join(detail or "" for detail in details.values()))
    assert not key_leaks(log_text(caplog))


@pytest.mark.parametrize("code", [401, 404, 500, 522])
def test_a_key_echoed_by_a_failing_request_is_not_in_the_failure(client, gravity, delivery_log, caplog, code):
    caplog.set_level(logging.DEBUG)
    gravity.queue(honest())
    gravity.default = echo_key(batch_status=code)

    result = make_pipeline(client, delivery_log=delivery_log).run([make_frame(30)])

    assert result.failure is not None
    assert result.failure.retryable is (code >= 500)
    assert_every_row_in_one_bucket(result.summary, 30)
    assert result.summary["delivered"] == 10
    assert not key_leaks(result.failure.message)
    assert not key_leaks(json.dumps(result.summary))
    assert not key_leaks(log_text(caplog))
    assert not key_leaks(json.dumps({f"{k}": v for k, v in logged(delivery_log).items()}))


def test_nothing_is_acknowledged_twice_across_a_hostile_run_and_its_retry(client, gravity, delivery_log):
    store = DictStore()
    gravity.queue(honest(), omit(count=3), reorder(), strip_ids(count=2), duplicate(), extra(), honest())
    gravity.default = status(503)
    frames = [make_frame(100), make_frame(100, prefix="p")]

    first = make_pipeline(client, store=store, delivery_log=delivery_log, max_concurrency=2).run(frames)

    assert first.failure is not None and first.failure.retryable
    assert_every_row_in_one_bucket(first.summary, first.summary["rows_read"])
    assert first.summary["delivered"] == len(gravity.accepted)
    gravity.default = honest()
    frames = [make_frame(100), make_frame(100, prefix="p")]

    second = make_pipeline(client, store=store, delivery_log=delivery_log, max_concurrency=2).run(frames)

    assert second.failure is None
    assert_every_row_in_one_bucket(second.summary, 200)
    assert second.summary["undelivered"] == 0
    assert second.summary["delivered"] + second.summary["skipped_delivered"] == 200
    assert_accepted_at_most_once(gravity)
    assert set(gravity.accepted) == purchase_keys([f"o{i}" for i in range(100)] + [f"p{i}" for i in range(100)])


# The operator, in real Airflow (imported in these tests only, so that the tests above run without Airflow loaded)


def load_orders(postgres, count: int) -> str:
    """``count`` clean orders (ids 1..count, an hour old) in a scratch table; return the SQL that reads them."""
    engine, schema = postgres
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"CREATE TABLE {schema}.orders (order_id BIGINT PRIMARY KEY, created_at TIMESTAMPTZ)"
        )
        connection.exec_driver_sql(
            f"INSERT INTO {schema}.orders SELECT i, now() - interval '1 hour' FROM generate_series(1, {count}) AS i"
        )
    return f"SELECT order_id AS event_id, created_at AS event_time FROM {schema}.orders ORDER BY order_id"


def kept_summary(dag_id: str) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        (kept,) = session.query(XComModel).filter_by(dag_id=dag_id, key="gravity_summary").all()
        return kept.value


def test_operator_a_404_mid_run_fails_the_task_at_once_and_keeps_the_summary(
    postgres, gravity, airflow_db, monkeypatch, caplog, capfd
):
    from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator

    caplog.set_level(logging.DEBUG)

    sql = load_orders(postgres, 200)
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(gravity, API_KEY, max_retries=1))
    gravity.queue(honest(), times=3)
    gravity.default = status(404, f"no such route (key {API_KEY.upper()})")
    dag = single_task_dag(
        "gravity_hostile_404",
        SendConversionsOperator,
        sql=sql,
        conn_id="warehouse",
        event_name="Purchase",
        chunk_size=100,
        batch_size=20,
        max_concurrency=1,
        retries=2,
        retry_exponential_backoff=False,
    )

    dag_run, _ = run_dag_test(dag)

    assert task_states(dag_run)["send"] == ("failed", 1), "a 404 is not worth a retry"
    summary = kept_summary("gravity_hostile_404")
    assert_every_row_in_one_bucket(summary, 200)
    assert summary["delivered"] == len(gravity.accepted) == 60
    assert summary["undelivered"] == 140
    assert not key_leaks(json.dumps(summary))
    printed = capfd.readouterr()
    assert "HTTP 404" in printed.out + printed.err + log_text(caplog), "the task log names the failure"
    assert not key_leaks("\n".join([printed.out, printed.err, log_text(caplog)]))


def test_operator_omitted_results_fail_the_task_retryably_and_the_retry_sends_only_them(
    postgres, gravity, airflow_db, monkeypatch
):
    from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator

    sql = load_orders(postgres, 60)
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(gravity, API_KEY, max_retries=1))
    gravity.queue(honest(), omit(["25", "33"]))
    dag = single_task_dag(
        "gravity_hostile_omit",
        SendConversionsOperator,
        sql=sql,
        conn_id="warehouse",
        event_name="Purchase",
        batch_size=20,
        max_concurrency=1,
        retries=1,
        retry_exponential_backoff=False,
    )

    dag_run, returned = run_dag_test(dag)

    assert task_states(dag_run)["send"] == ("success", 2), "the first try fails retryably, the retry succeeds"
    sent = gravity.sent_event_ids()
    assert sent[60:] == ["25", "33"], "the retry sends only the events left without a result"
    assert Counter(sent) == Counter([str(i) for i in range(1, 61)] + ["25", "33"])
    assert_accepted_at_most_once(gravity)
    assert len(gravity.accepted) == 60
    summary = returned["send"]
    assert_every_row_in_one_bucket(summary, 60)
    assert summary["delivered"] == 60


def test_operator_a_deeply_nested_answer_fails_the_try_retryably_and_a_refused_one_is_still_split(
    postgres, gravity, airflow_db, monkeypatch
):
    """Issue 17: a 2 KB answer nested 1,000 levels stopped the task as "sending a batch failed", never retried."""
    from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator

    sql = load_orders(postgres, 60)
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_DEFAULT", gravity_connection_json(gravity, API_KEY, max_retries=1))
    deep = DEEP_BODIES["arrays-1000"]
    # 1..20 ok; 21..40 refused whole with a deep body, then each half ok; 41..60 answered 200 with a deep body.
    gravity.queue(honest(), status(400, deep), honest(), honest(), status(200, deep))
    dag = single_task_dag(
        "gravity_hostile_deep",
        SendConversionsOperator,
        sql=sql,
        conn_id="warehouse",
        event_name="Purchase",
        batch_size=20,
        max_concurrency=1,
        retries=1,
        retry_exponential_backoff=False,
    )

    dag_run, returned = run_dag_test(dag)

    assert task_states(dag_run)["send"] == ("success", 2), "the first try fails retryably, the retry succeeds"
    sent = gravity.sent_event_ids()
    assert len(gravity.event_requests) == 6
    assert sent[80:] == [str(i) for i in range(41, 61)], "the retry sends only the batch the deep answer left"
    assert_accepted_at_most_once(gravity)
    assert len(gravity.accepted) == 60
    summary = returned["send"]
    assert_every_row_in_one_bucket(summary, 60)
    assert summary["delivered"] + summary["skipped_delivered"] == 60
