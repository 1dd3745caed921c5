"""The all-``ok`` reading of an answer gives what the general reading gives, for every body, and raises as it does."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_gravity.conversions.api.wire import answer_results, match_results, results_of
from airflow_provider_gravity.conversions.errors import GravityResponseError

KEYS = [("Purchase", "order-1"), ("Purchase", "order-2"), ("Lead", "é-3")]


def general(body: bytes, keys: list[tuple[str | None, str]]) -> object:
    try:
        return match_results(keys, results_of(body))
    except GravityResponseError as error:
        return ("raises", str(error))


def fast(body: bytes, keys: list[tuple[str | None, str]]) -> object:
    try:
        return answer_results(body, keys)
    except GravityResponseError as error:
        return ("raises", str(error))


def plain(ids: list[str]) -> bytes:
    return json.dumps({"results": [{"event_id": event_id, "status": "ok"} for event_id in ids]}).encode()


@pytest.mark.parametrize(
    "body",
    [
        plain(["order-1", "order-2", "é-3"]),
        plain(["order-2", "order-1", "é-3"]),  # out of order: matched by id
        plain(["order-1", "order-2"]),  # one result short: the third is missing
        plain(["order-1", "order-2", "é-3", "order-4"]),
        # A repeated key keeps its last value in both readings.
        b'{"results":[{"event_id":"x","status":"ok","event_id":"order-1"},'
        b'{"event_id":"order-2","status":"ok"},{"event_id":"\\u00e9-3","status":"ok"}]}',
        b'{"results":[{"event_id":"order-1","status":"error","status":"ok"},'
        b'{"event_id":"order-2","status":"ok"},{"event_id":"\\u00e9-3","status":"o\\u006b"}]}',
        b'{"results":[],"results":[{"event_id":"order-1","status":"ok"},'
        b'{"event_id":"order-2","status":"ok"},{"event_id":"\\u00e9-3","status":"ok"}]}',
        # Anything beside a plain ok goes the general way.
        b'{"results":[{"event_id":"order-1","status":"ok","attributed":true},'
        b'{"event_id":"order-2","status":"duplicate"},{"event_id":"\\u00e9-3","status":"error","error":"bad"}]}',
        b'{"results":[{"event_id":"order-1","status":"ok","event_name":"Lead"},'
        b'{"event_id":"order-2","status":"ok"},{"event_id":"\\u00e9-3","status":"ok"}]}',
        b'{"results":[{"event_id":1,"status":"ok"},{"event_id":"order-2","status":"ok"},'
        b'{"event_id":"\\u00e9-3","status":"ok"}]}',
        b'{"events_received":3,"results":[{"event_id":"order-1","status":"ok"},'
        b'{"event_id":"order-2","status":"ok"},{"event_id":"\\u00e9-3","status":"ok"}]}',
        b'{"results":[{"event_id":"order-1","status":"OK"},{"event_id":"order-2"},null]}',
        b'{"results":{"event_id":"order-1"}}',
        b'{"results":[' + b"[" * 5000 + b"]" * 5000 + b"]}",
        b'{"results":[{"event_id":"order-1","status":"ok"}]} trailing',
        b"\xff\xfe",
        b"[]",
        b"",
    ],
)
def test_each_body_reads_as_the_general_reading_reads_it(body: bytes) -> None:
    assert fast(body, KEYS) == general(body, KEYS)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
_results = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"event_id": st.sampled_from(["order-1", "order-2", "é-3", "x"]), "status": st.just("ok")}
        ),
        st.dictionaries(st.sampled_from(["event_id", "status", "event_name", "error", "attributed"]), _scalars),
        _scalars,
    ),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(results=_results, extra=st.dictionaries(st.sampled_from(["meta", "count"]), _scalars, max_size=1))
def test_generated_answers_read_alike(results: list[object], extra: dict[str, object]) -> None:
    body = json.dumps({"results": results, **extra}).encode()
    assert fast(body, KEYS) == general(body, KEYS)


def test_a_plain_answer_gives_an_ok_per_event() -> None:
    results = answer_results(plain(["order-1", "order-2", "é-3"]), KEYS)
    assert [(result.event_id, result.status, result.error, result.attributed) for result in results] == [
        ("order-1", "ok", None, None),
        ("order-2", "ok", None, None),
        ("é-3", "ok", None, None),
    ]
