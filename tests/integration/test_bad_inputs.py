"""A catalogue of bad inputs: each lands in its documented bucket with its documented reason, and the run goes on."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import time
import uuid
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from airflow_provider_gravity.conversions.api.client import GravityClient
from airflow_provider_gravity.conversions.events.build import EventSettings
from airflow_provider_gravity.conversions.read.columns import ColumnContractError
from airflow_provider_gravity.conversions.run.pipeline import ConversionPipeline

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
    # Issue 9, defect 4: times no pandas timestamp holds, and times before 1970 (never a negative event_time).
    ("year_9999_timestamp", {"event_time": dt.datetime(9999, 12, 31)}, "invalid", "event_time_in_future"),
    ("year_1_timestamp", {"event_time": dt.datetime(1, 1, 1)}, "invalid", "bad_event_time"),
    ("year_9999_numpy_timestamp", {"event_time": np.datetime64("9999-12-31")}, "invalid", "event_time_in_future"),
    ("year_9999_iso_text", {"event_time": "9999-12-31T23:59:59"}, "invalid", "event_time_in_future"),
    ("year_1_iso_text", {"event_time": "0001-01-01"}, "invalid", "bad_event_time"),
    ("before_1970_timestamp", {"event_time": dt.datetime(1969, 6, 1, 12, 0)}, "invalid", "bad_event_time"),
    ("before_1970_date", {"event_time": dt.date(1950, 6, 1)}, "invalid", "bad_event_time"),
    ("dict_event_time", {"event_time": {"at": 1}}, "invalid", "bad_event_time"),
    ("huge_int_event_time", {"event_time": 10**400}, "invalid", "bad_event_time"),
    # Defect 11: odd cell types in the identity columns.
    ("dict_event_id", {"event_id": {"id": 1}}, "invalid", "bad_event_id"),
    ("list_of_dicts_event_id", {"event_id": [{"id": 1}]}, "invalid", "bad_event_id"),
    ("infinite_float_event_id", {"event_id": float("inf")}, "invalid", "bad_event_id"),
    ("decimal_infinity_event_id", {"event_id": Decimal("Infinity")}, "invalid", "bad_event_id"),
    ("decimal_snan_event_id", {"event_id": Decimal("sNaN")}, "invalid", "missing_event_id"),
    ("int_beyond_float_range_event_id", {"event_id": 10**400}, "invalid", "event_id_too_long"),
    ("int_of_5000_digits_event_id", {"event_id": 10**5000}, "invalid", "bad_event_id"),
    ("invalid_utf8_bytes_event_id", {"event_id": b"\xff\xfe"}, "invalid", "bad_event_id"),
    ("nul_in_event_id", {"event_id": "ord\x00er-1"}, "invalid", "bad_event_id"),
    ("newline_in_event_id", {"event_id": "order\n-1"}, "invalid", "bad_event_id"),
    ("dict_event_name", {"event_name": {"name": "Purchase"}}, "invalid", "bad_event_name"),
    ("overlong_event_name", {"event_name": "P" * 300}, "invalid", "event_name_too_long"),
    # ... and in the value and JSON columns.
    ("decimal_infinity_value", {"value": Decimal("Infinity")}, "invalid", "bad_value"),
    ("int_beyond_float_range_value", {"value": 10**400}, "invalid", "bad_value"),
    ("dict_value", {"value": {"amount": 1}}, "invalid", "bad_value"),
    ("invalid_utf8_bytes_value", {"value": b"\xff"}, "invalid", "bad_value"),
    ("dict_currency", {"currency": {"code": "USD"}}, "invalid", "bad_currency"),
    ("list_of_dicts_pixel_user_data", {"user_data": [{"click_id": "c"}]}, "invalid", "bad_user_data"),
    ("infinity_in_pixel_user_data", {"user_data": {"click_id": Decimal("Infinity")}}, "invalid", "bad_user_data"),
    (
        "deeply_nested_client_context",
        {"client_context": '{"a":' * 5_000 + "1" + "}" * 5_000},
        "invalid",
        "bad_client_context",
    ),
    ("int_beyond_a_doubles_range_in_custom_data", {"custom_big": 10**400}, "invalid", "bad_custom_data"),
    ("infinity_in_custom_data", {"custom_rate": float("-inf")}, "invalid", "bad_custom_data"),
    ("dict_item_id_in_contents", {"contents": [{"id": {"sku": 1}}]}, "invalid", "bad_contents"),
    # Found by an adversarial review of the fixes above.
    ("duration_event_id", {"event_id": np.timedelta64(5, "s")}, "invalid", "bad_event_id"),
    ("duration_event_time", {"event_time": np.timedelta64(5, "s")}, "invalid", "bad_event_time"),
    # Issue 17, item 5: bytes that are not UTF-8 in a custom_data key (a BLOB read by a DB-API cursor).
    ("invalid_utf8_bytes_in_custom_data", {"custom_blob": b"\xff\xfe"}, "invalid", "bad_custom_data"),
]

GOOD_EMAIL_HASH = hashlib.sha256(b"good@example.com").hexdigest()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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
    # Issue 9, defect 1: plaintext PII inside the pixel's user_data is hashed by the columns' rules.
    (
        "pixel_user_data_pii_is_hashed_and_unioned",
        {"user_data": {"em": "Bob@Example.com", "ph": "+1 650 253 0000", "fn": "Bob", "click_id": "clk-7"}},
        lambda e: (
            e["user_data"]
            == {
                "em": [GOOD_EMAIL_HASH, sha("bob@example.com")],
                "ph": [sha("16502530000")],
                "fn": sha("bob"),
                "click_id": "clk-7",
            }
        ),
    ),
    (
        "pixel_user_data_json_text_with_scalar_phone",
        {"user_data": '{"ph": "(650) 253-0000", "visitor_id": "v-1"}'},
        lambda e: e["user_data"]["ph"] == [sha("16502530000")] and e["user_data"]["visitor_id"] == "v-1",
    ),
    (
        "pixel_user_data_names_lose_to_the_columns",
        {"fn": "Alice", "user_data": {"fn": "Bob", "LN": "Smith", " Em ": ["GOOD@example.com", "x@example.org"]}},
        lambda e: (
            e["user_data"]
            == {
                "em": [GOOD_EMAIL_HASH, sha("x@example.org")],
                "fn": sha("alice"),
                "ln": sha("smith"),
            }
        ),
    ),
    (
        "pixel_user_data_invalid_email_is_dropped",
        {"user_data": {"em": "not-an-email", "session_id": "s-1"}},
        lambda e: e["user_data"] == {"em": [GOOD_EMAIL_HASH], "session_id": "s-1"},
    ),
    # Defect 12: bytes are text; zero-width characters do not change an email's hash.
    ("bytes_email", {"em": b" Good@Example.com "}, lambda e: e["user_data"]["em"] == [GOOD_EMAIL_HASH]),
    ("memoryview_email", {"em": memoryview(b"GOOD@example.com")}, lambda e: e["user_data"]["em"] == [GOOD_EMAIL_HASH]),
    (
        "zero_width_in_email",
        {"em": "good\u200b@example.com\ufeff"},
        lambda e: e["user_data"]["em"] == [GOOD_EMAIL_HASH],
    ),
    (
        "nested_list_element_is_never_hashed_as_its_repr",
        {"em": [["good@example.com"], "good@example.com"]},
        lambda e: e["user_data"]["em"] == [GOOD_EMAIL_HASH],
    ),
    ("bytes_first_name", {"fn": "Zoë".encode()}, lambda e: e["user_data"]["fn"] == sha("zoë")),
    ("bytes_event_id", {"event_id": b"order-77"}, lambda e: e["event_id"] == "order-77"),
    # Defect 11: a field no rule can read is dropped; the event still goes.
    ("invalid_utf8_email_is_dropped", {"em": b"\xff@example.com"}, lambda e: "em" not in e.get("user_data", {})),
    ("dict_phone_is_dropped", {"ph": {"number": "+16502530000"}}, lambda e: "ph" not in e.get("user_data", {})),
    ("dict_click_id_is_dropped", {"click_id": {"id": "c"}}, lambda e: "click_id" not in e.get("user_data", {})),
    ("infinite_external_id_is_dropped", {"external_id": float("inf")}, lambda e: "external_id" not in e["user_data"]),
    ("decimal_snan_value_means_no_value", {"value": Decimal("sNaN")}, lambda e: "value" not in e["custom_data"]),
    # Found by an adversarial review of the fixes: each was a crash, a wrong hash or a merged row.
    (
        "numeric_id_of_30_digits_keeps_every_digit",
        {"event_id": Decimal("12345678901234567890123456789.1")},
        lambda e: e["event_id"] == "12345678901234567890123456789.1",
    ),
    ("duration_email_is_dropped", {"em": np.timedelta64(5, "s")}, lambda e: "em" not in e.get("user_data", {})),
    (
        "int_of_5000_digits_external_id_is_dropped",
        {"external_id": 10**5000},
        lambda e: "external_id" not in e["user_data"],
    ),
    ("nul_in_email_is_dropped", {"em": "good@example.com\x00"}, lambda e: "em" not in e.get("user_data", {})),
    ("lone_surrogate_in_email_is_dropped", {"em": "j\ud800@example.com"}, lambda e: "em" not in e.get("user_data", {})),
    (
        "pixel_pii_key_behind_invisible_characters_is_hashed",
        {"user_data": {"\ufeffe\u200bm ": "Bob@Example.com"}},
        lambda e: e["user_data"] == {"em": [GOOD_EMAIL_HASH, sha("bob@example.com")]},
    ),
    # One text rendering on every path: integral numbers lose their decimal part, booleans are lower case.
    ("decimal_integral_event_id", {"event_id": Decimal("42.0")}, lambda e: e["event_id"] == "42"),
    (
        "decimal_integral_external_id",
        {"external_id": Decimal("42.0")},
        lambda e: e["user_data"]["external_id"] == ["42"],
    ),
    ("decimal_integral_order_id", {"order_id": Decimal("42.0")}, lambda e: e["custom_data"]["order_id"] == "42"),
    ("boolean_external_id", {"external_id": True}, lambda e: e["user_data"]["external_id"] == ["true"]),
    ("decimal_fraction_order_id", {"order_id": Decimal("19.90")}, lambda e: e["custom_data"]["order_id"] == "19.9"),
    # Issue 17, item 8: integral numbers keep every digit in value and custom_<key> (float64 rounds them beyond
    # 2**53); uuid, inet, cidr, time and interval cells of a custom_<key> are sent as text.
    ("int_beyond_2_53_value", {"value": 9007199254740993}, lambda e: e["custom_data"]["value"] == 9007199254740993),
    (
        "decimal_of_30_digits_value",
        {"value": Decimal("123456789012345678901234567890")},
        lambda e: e["custom_data"]["value"] == 123456789012345678901234567890,
    ),
    ("integer_text_beyond_2_53_value", {"value": "9007199254740993"}, lambda e: e["custom_data"]["value"] == 2**53 + 1),
    ("int_beyond_64_bits_in_custom_data", {"custom_big": 10**30}, lambda e: e["custom_data"]["big"] == 10**30),
    (
        "decimal_beyond_2_53_in_custom_data",
        {"custom_n": Decimal("9007199254740993")},
        lambda e: e["custom_data"]["n"] == 9007199254740993,
    ),
    (
        "uuid_in_custom_data",
        {"custom_u": uuid.UUID(int=1)},
        lambda e: e["custom_data"]["u"] == "00000000-0000-0000-0000-000000000001",
    ),
    (
        "inet_in_custom_data",
        {"custom_ip": ipaddress.ip_interface("10.0.0.1/24")},
        lambda e: e["custom_data"]["ip"] == "10.0.0.1/24",
    ),
    ("time_in_custom_data", {"custom_t": dt.time(10, 30)}, lambda e: e["custom_data"]["t"] == "10:30:00"),
    (
        "interval_in_custom_data",
        {"custom_d": dt.timedelta(days=1, hours=2)},
        lambda e: e["custom_data"]["d"] == "P1DT2H",
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
        sender=client,
        clock=lambda: NOW,
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


@pytest.mark.parametrize("column", ["custom_value", "custom_currency", "CUSTOM_ORDER_ID", "custom_contents"])
def test_a_custom_column_that_would_replace_a_checked_key_stops_the_run(sandbox, column):
    with pytest.raises(ColumnContractError, match=r"would replace a custom_data key"):
        run(sandbox, [{column: "-5 not a number"}])
    assert sandbox.stats()["requests"] == 0


def test_an_unknown_column_stops_the_run_before_anything_is_sent(sandbox):
    with pytest.raises(ColumnContractError, match=r"'emial'.*event_id, event_time"):
        run(sandbox, [{"emial": "typo@example.com"}])
    assert sandbox.stats()["requests"] == 0
