"""A catalogue of bad inputs: each lands in its documented bucket with its documented reason, and the run goes on."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from airflow_provider_gravity.conversions.client import GravityClient
from airflow_provider_gravity.conversions.columns import ColumnContractError
from airflow_provider_gravity.conversions.events import EventSettings
from airflow_provider_gravity.conversions.pipeline import ConversionPipeline

NOW = int(time.time())
HOUR_AGO = NOW - 3600
UPPER_HEX = "973DFE463EC85785F5F95AF5BA3906EEDB2D931C24E69824A89EA65DBA4E813B"
GOOD_ROW = {"event_id": "good-1", "event_time": HOUR_AGO, "em": "good@example.com", "value": 10, "currency": "USD"}

# (case id, row overrides, bucket, reason) — "delivered" rows are checked further in the next table.
BAD_ROWS = [
    ("null_event_time", {"event_time": None}, "invalid", "missing_event_time"),
    ("nan_event_time", {"event_time": float("nan")}, "invalid", "missing_event_time"),
    ("blank_event_time", {"event_time": "   "}, "invalid", "missing_event_time"),
    ("unparseable_event_time", {"event_time": "yesterday"}, "invalid", "bad_event_time"),
    ("milliseconds_event_time", {"event_time": NOW * 1000}, "invalid", "bad_event_time"),
    ("negative_event_time", {"event_time": -5}, "invalid", "bad_event_time"),
    ("future_event_time", {"event_time": NOW + 86_400}, "invalid", "event_time_in_future"),
    ("future_iso_event_time", {"event_time": "2099-01-01T00:00:00Z"}, "invalid", "event_time_in_future"),
    ("null_event_id", {"event_id": None}, "invalid", "missing_event_id"),
    ("empty_event_id", {"event_id": ""}, "invalid", "missing_event_id"),
    ("whitespace_event_id", {"event_id": "   "}, "invalid", "missing_event_id"),
    ("nan_event_id", {"event_id": float("nan")}, "invalid", "missing_event_id"),
    ("overlong_event_id", {"event_id": "x" * 300}, "invalid", "event_id_too_long"),
    ("array_pixel_user_data", {"user_data": '["clk-1"]'}, "invalid", "bad_user_data"),
    ("negative_value", {"value": -1}, "invalid", "bad_value"),
    ("infinite_value", {"value": float("inf")}, "invalid", "bad_value"),
    ("text_value", {"value": "twelve"}, "invalid", "bad_value"),
    ("boolean_value", {"value": True}, "invalid", "bad_value"),
    ("long_currency", {"currency": "dollars"}, "invalid", "bad_currency"),
    ("short_currency", {"currency": "us"}, "invalid", "bad_currency"),
    ("digit_currency", {"currency": "U5D"}, "invalid", "bad_currency"),
    ("non_json_client_context", {"client_context": "{not json"}, "invalid", "bad_client_context"),
    ("array_client_context", {"client_context": "[1, 2]"}, "invalid", "bad_client_context"),
    ("nan_in_client_context", {"client_context": {"screen": float("nan")}}, "invalid", "bad_client_context"),
    ("non_json_contents", {"contents": "sku-1 x2"}, "invalid", "bad_contents"),
    ("contents_not_array", {"contents": '{"id": "sku-1"}'}, "invalid", "bad_contents"),
    ("contents_item_without_id", {"contents": '[{"quantity": 1}]'}, "invalid", "bad_contents"),
    ("contents_negative_quantity", {"contents": '[{"id": "a", "quantity": -1}]'}, "invalid", "bad_contents"),
    ("oversized_contents", {"contents": [{"id": f"sku-{i}"} for i in range(501)]}, "invalid", "bad_contents"),
    ("non_json_pixel_user_data", {"user_data": "click=abc"}, "invalid", "bad_user_data"),
    ("duplicate_event_id", {"event_id": "good-1"}, "invalid", "duplicate_in_run"),
]

# (case id, row overrides, check of the event that Gravity received)
ACCEPTED_ROWS = [
    (
        "naive_timestamp_in_operator_zone",
        {"event_time": dt.datetime(2026, 7, 1, 12, 0)},
        lambda e: e["event_time"] == int(dt.datetime(2026, 7, 1, 16, 0, tzinfo=dt.UTC).timestamp()),
    ),
    (
        "aware_timestamp",
        {"event_time": pd.Timestamp("2026-07-01T12:00:00+02:00")},
        lambda e: e["event_time"] == int(dt.datetime(2026, 7, 1, 10, 0, tzinfo=dt.UTC).timestamp()),
    ),
    (
        "iso_string_with_z",
        {"event_time": "2026-07-01T12:00:00Z"},
        lambda e: e["event_time"] == int(dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC).timestamp()),
    ),
    ("epoch_seconds_as_text", {"event_time": str(HOUR_AGO)}, lambda e: e["event_time"] == HOUR_AGO),
    ("integer_event_id", {"event_id": 42}, lambda e: e["event_id"] == "42"),
    ("float_event_id", {"event_id": 42.0}, lambda e: e["event_id"] == "42"),
    ("decimal_event_id", {"event_id": Decimal("7")}, lambda e: e["event_id"] == "7"),
    ("padded_event_id", {"event_id": "  order-9 "}, lambda e: e["event_id"] == "order-9"),
    ("nan_value_means_no_value", {"value": float("nan")}, lambda e: "value" not in e["custom_data"]),
    ("decimal_value", {"value": Decimal("19.99")}, lambda e: e["custom_data"]["value"] == 19.99),
    ("numpy_value", {"value": np.float32(2.5)}, lambda e: e["custom_data"]["value"] == 2.5),
    ("padded_lowercase_currency", {"currency": " eur "}, lambda e: e["custom_data"]["currency"] == "EUR"),
    ("prehashed_uppercase_email", {"em": UPPER_HEX}, lambda e: e["user_data"]["em"] == [UPPER_HEX.lower()]),
    ("empty_email_is_absent", {"em": ""}, lambda e: "em" not in e.get("user_data", {})),
    (
        "client_context_passed_unchanged",
        {"client_context": '{"timezone": "Europe/Paris", "screen": {"w": 1}}'},
        lambda e: e["client_context"] == {"timezone": "Europe/Paris", "screen": {"w": 1}},
    ),
    (
        "pixel_user_data_merged",
        {"user_data": {"click_id": "clk-1", "visitor_id": "v-9"}},
        lambda e: e["user_data"]["click_id"] == "clk-1" and e["user_data"]["visitor_id"] == "v-9",
    ),
    ("numpy_external_id", {"external_id": np.int64(5)}, lambda e: e["user_data"]["external_id"] == ["5"]),
    (
        "custom_keys",
        {"custom_store": "Paris-1", "custom_note": float("nan")},
        lambda e: e["custom_data"]["store"] == "Paris-1" and "note" not in e["custom_data"],
    ),
    (
        "contents_from_json_text",
        {"contents": '[{"id": 12, "quantity": 2, "item_price": 4.5}]'},
        lambda e: e["custom_data"]["contents"] == [{"id": "12", "quantity": 2, "item_price": 4.5}],
    ),
]


def run(sandbox, rows: list[dict], **settings) -> dict:
    settings = {"event_name": "Purchase", "timezone": "America/New_York", **settings}
    client = GravityClient(sandbox.url, sandbox.api_key)
    pipeline = ConversionPipeline(
        settings=EventSettings(**settings),
        send=client.send_events,
        clock=lambda: NOW,
        request_counts=lambda: (client.requests_sent, client.retries),
    )
    frame = pd.DataFrame([{**GOOD_ROW, **row} for row in rows], dtype=object)
    return pipeline.run([frame]).summary


def bucket_counts(summary: dict) -> dict:
    return {
        b: summary[b]
        for b in ("delivered", "duplicate", "rejected", "invalid", "skipped_delivered", "undelivered")
        if summary[b]
    }


def test_the_catalogue_has_at_least_30_bad_inputs():
    assert len(BAD_ROWS) + len(ACCEPTED_ROWS) >= 30
    assert len(BAD_ROWS) >= 30


@pytest.mark.parametrize(("overrides", "bucket", "reason"), [c[1:] for c in BAD_ROWS], ids=[c[0] for c in BAD_ROWS])
def test_bad_row_lands_in_its_bucket_and_the_run_goes_on(sandbox, overrides, bucket, reason):
    summary = run(sandbox, [{}, overrides])

    assert bucket_counts(summary) == {"delivered": 1, bucket: 1}
    assert summary["invalid_reasons"] == {reason: 1}
    assert [e["event_id"] for e in sandbox.events()] == ["good-1"]


@pytest.mark.parametrize(("overrides", "check"), [c[1:] for c in ACCEPTED_ROWS], ids=[c[0] for c in ACCEPTED_ROWS])
def test_unusual_but_valid_row_is_delivered_as_documented(sandbox, overrides, check):
    row = {"event_id": "odd-1", **overrides}

    summary = run(sandbox, [row])

    assert bucket_counts(summary) == {"delivered": 1}
    (event,) = sandbox.events()
    assert check(event), event
    assert sandbox.stats()["plaintext_pii_seen"] == 0


def test_invalid_email_and_phone_are_dropped_from_an_event_that_is_still_sent(sandbox):
    summary = run(sandbox, [{"em": "no-at-sign.example.com", "ph": "12345", "external_id": "c-1"}])

    assert bucket_counts(summary) == {"delivered": 1}
    assert summary["field_drops"]["invalid_email"] == 1
    assert summary["field_drops"]["invalid_phone"] == 1
    (event,) = sandbox.events()
    assert event["user_data"] == {"external_id": ["c-1"]}


def test_rows_without_any_match_key_are_refused_when_one_is_required(sandbox):
    summary = run(sandbox, [{"event_id": "anon-1", "em": None}], require_match_key=True)

    assert bucket_counts(summary) == {"invalid": 1}
    assert summary["invalid_reasons"] == {"no_match_keys": 1}


def test_events_older_than_max_event_age_are_refused(sandbox):
    summary = run(
        sandbox, [{}, {"event_id": "old-1", "event_time": NOW - 8 * 86_400}], max_event_age_seconds=7 * 86_400
    )

    assert bucket_counts(summary) == {"delivered": 1, "invalid": 1}
    assert summary["invalid_reasons"] == {"event_too_old": 1}


def test_rows_without_event_name_and_no_default_are_refused(sandbox):
    summary = run(sandbox, [{}], event_name=None)

    assert summary["invalid_reasons"] == {"missing_event_name": 1}
    assert sandbox.stats()["requests"] == 0


def test_an_unknown_column_stops_the_run_before_anything_is_sent(sandbox):
    with pytest.raises(ColumnContractError, match=r"'emial'.*event_id, event_time"):
        run(sandbox, [{"emial": "typo@example.com"}])
    assert sandbox.stats()["requests"] == 0
