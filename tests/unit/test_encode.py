"""Events written as canonical JSON (events/encode.py), checked against json.dumps; regressions an adversary found."""

from __future__ import annotations

import decimal
import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_gravity.conversions.events.build import EventSettings, build_events
from airflow_provider_gravity.conversions.events.encode import value_fragments
from airflow_provider_gravity.conversions.events.fields import money, money_column
from tests.support.examples import examples

NOW = 1_767_230_000


def canonical(text: str) -> str:
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def test_custom_keys_sort_by_the_key_sent_so_the_delivery_log_hash_keeps_its_formula():
    frame = pd.DataFrame(
        {
            "event_id": ["1"],
            "event_time": [NOW - 100],
            "order_id": ["A1"],
            "custom_store_id": ["s1"],
            "custom_zz": ["z"],
            "value": [5],
            "currency": ["usd"],
        }
    )

    (text,) = build_events(frame, EventSettings(event_name="Purchase"), NOW).encoded

    assert text == canonical(text)
    event = json.loads(text)
    expected_hash = hashlib.sha256(json.dumps(event, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert hashlib.sha256(text.encode("ascii")).hexdigest() == expected_hash


@pytest.mark.parametrize("column", ["custom_note", "order_id", "contents"])
def test_a_lone_surrogate_in_custom_data_refuses_the_row_instead_of_dropping_the_field(column):
    cells = {
        "custom_note": {"k": "ok\ud800"},
        "order_id": "B\udc00",
        "contents": '[{"id": "x\\ud800", "quantity": 1}]',
    }
    frame = pd.DataFrame(
        {"event_id": ["1", "2"], "event_time": [NOW - 100] * 2, column: [cells[column], None]}, dtype=object
    )

    built = build_events(frame, EventSettings(event_name="Purchase"), NOW)

    assert built.reasons == ["unencodable_text", None]
    assert built.encoded[0] is None and built.encoded[1] is not None


def test_amounts_keep_every_digit_of_whole_numbers_and_round_others_as_money_does():
    cells = [913123182072546, 913123182072546.0, 7.0932005, 0.1 + 0.2, 1e300, 19.9]

    converted, reasons = money_column(pd.Series(cells, dtype=object))

    expected = [money(cell) for cell in cells]
    assert list(converted) == expected
    assert [type(value) for value in converted] == [type(value) for value in expected]
    assert converted[0] == converted[1] == 913123182072546
    assert reasons == [None] * len(cells)


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/New_York"])
def test_a_zoned_time_beyond_year_9999_in_a_text_column_is_unreadable_not_a_crash(zone):
    """Found in CI by the derandomized property tests: pandas cannot localize such a time to a Python datetime."""
    times = pd.Series(np.array(["9999-12-31T23:00:00", "2026-01-01T00:00:00"], dtype="datetime64[us]"))
    zoned = times.dt.tz_localize("UTC").dt.tz_convert(zone)
    frame = pd.DataFrame(
        {"event_id": ["a", "b"], "event_time": [NOW - 100] * 2, "event_name": zoned, "custom_at": zoned, "em": zoned}
    )

    built = build_events(frame, EventSettings(), NOW)

    assert built.reasons[1] is None and built.encoded[1] is not None
    # pandas 3 cannot write 10000-01-01 in Tokyo as text (the row is refused, named); pandas 2 writes it.
    first = built.encoded[0]
    assert (built.reasons[0], first) == ("bad_event_name", None) or (
        built.reasons[0] is None and json.loads(first)["event_name"][:5] in ("9999-", "10000")
    )


def test_rows_with_none_of_an_objects_fields_keep_their_place():
    # pyarrow 26's join with null_handling="skip" drops a row whose inputs are all null: every later event
    # would take the next row's text. Rows 1 and 3 have neither custom field, rows 0, 2 and 4 have one each.
    frame = pd.DataFrame(
        {
            "event_id": ["r0", "r1", "r2", "r3", "r4"],
            "event_time": [NOW - 100] * 5,
            "custom_a": ["x", None, None, None, "z"],
            "custom_b": [None, None, "y", None, None],
        }
    )

    events = build_events(frame, EventSettings(event_name="Purchase"), NOW).events

    assert [event["event_id"] for event in events] == ["r0", "r1", "r2", "r3", "r4"]
    assert [event.get("custom_data") for event in events] == [{"a": "x"}, None, {"b": "y"}, None, {"a": "z"}]


@pytest.mark.parametrize(
    "event_id",
    ['quote"d', "back\\slash", "tab\tinside", "ΣΩΚΡΑΤΗΣ", "emoji 🎉", "ünïcödé", "\x7f", "ctrl\x01"],
)
def test_ids_that_need_escaping_are_written_as_json_dumps_writes_them(event_id):
    frame = pd.DataFrame({"event_id": ["plain", event_id], "event_time": [NOW - 100] * 2})

    built = build_events(frame, EventSettings(event_name="Purchase"), NOW)

    for text, reason in zip(built.encoded, built.reasons, strict=True):
        if reason is None:
            assert text == canonical(text)
            assert json.loads(text)["event_id"] in ("plain", event_id)
    assert built.reasons[0] is None


def _as_json_dumps_writes(key: str, values: list) -> list[str | None]:
    written: list[str | None] = []
    for value in values:
        try:
            written.append(None if value is None else f"{json.dumps(key)}:{json.dumps(value, allow_nan=False)}")
        except ValueError:
            written.append(None)
    return written


_NUMBER_CELLS = st.one_of(
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=1e10).map(lambda number: round(number, 2)),
    st.sampled_from([0.0, -0.0, 12.0, 1e-4, 9.9e-5, 1e15 + 0.5, 1e16, 0.1 + 0.2, 2.0**53, 2**53 + 1]),
)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(_NUMBER_CELLS, min_size=1, max_size=40))
def test_numbers_are_written_as_json_dumps_writes_them_and_nan_is_refused(values):
    fragments = value_fragments("value", values)

    written = fragments.texts()
    expected = _as_json_dumps_writes("value", values)
    assert written == expected
    assert fragments.unencodable == [row for row, value in enumerate(values) if value is not None and not expected[row]]


def test_ten_thousand_amounts_written_by_arrow_match_python_digit_for_digit():
    rng = np.random.default_rng(18)
    amounts = [
        *np.round(rng.uniform(0, 10.0 ** rng.integers(1, 12, size=5_000)), 2).tolist(),
        *rng.uniform(1e-4, 1e15, size=5_000).tolist(),
    ]

    written = value_fragments("value", amounts).texts()

    assert written == _as_json_dumps_writes("value", amounts)


def test_numeric_amounts_are_written_from_float64_as_json_dumps_writes_money_of_each_cell():
    cells = [
        decimal.Decimal("9007199254740993"),  # 2**53 + 1: every digit, not float64's ...992
        decimal.Decimal("19.90"),
        None,
        decimal.Decimal("NaN"),
        decimal.Decimal("-1"),
        decimal.Decimal("1E+21"),
        decimal.Decimal("0.00001"),
        decimal.Decimal("42.000"),
        decimal.Decimal("8589934592.1234567"),  # above 2**33: rounded by Python
        decimal.Decimal("0.1234565"),
    ]
    frame = pd.DataFrame(
        {"event_id": [str(i) for i in range(len(cells))], "event_time": [NOW - 100] * len(cells), "value": cells}
    )

    built = build_events(frame, EventSettings(event_name="Purchase"), NOW)

    for cell, text, reason in zip(cells, built.encoded, built.reasons, strict=True):
        try:
            expected = money(cell)
        except Exception:  # noqa: BLE001 - the cell's reason is what the row gets
            assert (text, reason) == (None, "bad_value")
            continue
        if expected is None:
            assert "custom_data" not in json.loads(text)
            continue
        written = re.search(r'"value":([^,}]+)', text).group(1)
        assert written == json.dumps(expected)


def test_an_argument_standing_in_for_a_column_that_cannot_be_written_names_every_row():
    frame = pd.DataFrame({"event_id": ["a", "b"], "event_time": [1_767_225_600, 1_767_225_601]})
    built = build_events(frame, EventSettings(event_name="Lead\ud800", action_source="website"), 1_767_225_700)
    assert built.reasons == ["unencodable_text", "unencodable_text"]
    assert built.encoded == [None, None]


def test_an_argument_standing_in_for_a_column_is_written_on_every_row_as_a_column_would_be():
    frame = pd.DataFrame({"event_id": ["a", "b"], "event_time": [1_767_225_600, 1_767_225_601]})
    from_arguments = build_events(frame, EventSettings(event_name='Lé "x"', action_source="website"), 1_767_225_700)
    as_columns = frame.assign(event_name=['Lé "x"'] * 2, action_source=["website"] * 2)
    assert from_arguments.encoded == build_events(as_columns, EventSettings(), 1_767_225_700).encoded
    assert json.loads(from_arguments.encoded[0])["event_name"] == 'Lé "x"'
