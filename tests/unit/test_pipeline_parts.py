"""The pipeline's parts on their own: in-run dedup, event times, resume state, batch splitting, the summary."""

from __future__ import annotations

import datetime as dt
import json
import logging

import numpy as np
import pandas as pd
import pytest

from airflow_provider_gravity.conversions.api.outcomes import outcome_of, send_with_split
from airflow_provider_gravity.conversions.api.wire import EventResult, match_results
from airflow_provider_gravity.conversions.errors import GravityRequestRejected, GravityUnavailableError
from airflow_provider_gravity.conversions.events.build import EventSettings
from airflow_provider_gravity.conversions.events.event_times import event_time_seconds
from airflow_provider_gravity.conversions.read.columns import ColumnContractError, normalize_column_names
from airflow_provider_gravity.conversions.run.pipeline import ConversionPipeline
from airflow_provider_gravity.conversions.run.resume import STATE_KEY, ResumeLog, chunk_digest
from airflow_provider_gravity.conversions.run.seen_keys import SeenKeys
from airflow_provider_gravity.conversions.run.tally import Tally, build_summary, format_summary
from tests.support.state_store import DictStore


class FunctionSender:
    """A sender made of a function of the events as dicts, the shape these tests read most easily."""

    def __init__(self, function) -> None:
        self.function = function
        self.requests_sent = 0
        self.retries = 0

    def send_events(self, events):
        self.requests_sent += 1
        return self.function([json.loads(event.json) for event in events])


def keys_of(events: list[dict]) -> list[tuple[str | None, str]]:
    return [(event.get("event_name"), str(event["event_id"])) for event in events]


def run_with_resume(store: DictStore, send, frames: list[pd.DataFrame]):
    """One try of a ``Lead`` run in batches of 10, one at a time, resuming through ``store``."""
    pipeline = ConversionPipeline(
        settings=EventSettings(event_name="Lead"),
        sender=FunctionSender(send),
        batch_size=10,
        max_concurrency=1,
        resume=ResumeLog(store, "query-1", min_interval=0),
        clock=lambda: 1_767_230_000,
    )
    return pipeline.run(frames)


def test_seen_keys_keeps_first_occurrences_across_chunks():
    seen = SeenKeys()
    assert seen.first_occurrences([("P", "1"), ("P", "2"), ("P", "1"), ("Lead", "1")]) == [True, True, False, True]
    assert seen.first_occurrences([("P", "2"), ("P", "3")]) == [False, True]
    assert len(seen) == 4


def test_seen_keys_hold_the_keys_on_disk_and_a_few_bits_a_key_in_memory():
    with SeenKeys() as seen:
        for start in range(0, 200_000, 50_000):
            seen.first_occurrences([("Purchase", str(i)) for i in range(start, start + 50_000)])
        assert len(seen) == 200_000
        assert seen.memory_bytes < 200_000 * 20, "the filter and the small runs: not 8 bytes a key"
        assert seen.disk_bytes > 200_000 * 16, "every key in full, and its record"


def test_event_times_from_every_warehouse_type():
    naive = pd.Series(pd.to_datetime(["2026-01-01 00:00:00", None]))
    aware = pd.Series(pd.to_datetime(["2026-01-01T00:00:00+01:00"], utc=True))
    numbers = pd.Series([1_767_225_600, np.nan, 1_767_225_600_000])
    texts = pd.Series(["2026-01-01T00:00:00Z", "2026-01-01", "1767225600", "garbage", "  "], dtype=object)

    assert event_time_seconds(naive, "UTC")[0][0] == 1_767_225_600
    assert event_time_seconds(naive, "America/New_York")[0][0] == 1_767_225_600 + 5 * 3600
    assert event_time_seconds(aware, "UTC")[0][0] == 1_767_225_600 - 3600
    seconds, missing = event_time_seconds(numbers, "UTC")
    assert seconds[0] == 1_767_225_600 and missing.tolist() == [False, True, False] and np.isnan(seconds[2])
    seconds, missing = event_time_seconds(texts, "UTC")
    assert seconds[:3].tolist() == [1_767_225_600] * 3
    assert np.isnan(seconds[3]) and not missing[3]
    assert missing[4]


def test_dates_and_python_datetimes_in_object_columns():
    values = pd.Series([dt.date(2026, 1, 1), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)], dtype=object)
    assert event_time_seconds(values, "UTC")[0].tolist() == [1_767_225_600, 1_767_225_600]


def test_column_names_are_case_insensitive_and_typos_are_named():
    assert normalize_column_names(["EVENT_ID", "Event_Time", "custom_store"]) == [
        "event_id",
        "event_time",
        "custom_store",
    ]
    with pytest.raises(ColumnContractError, match="'emial'"):
        normalize_column_names(["event_id", "event_time", "emial"])
    with pytest.raises(ColumnContractError, match="event_time"):
        normalize_column_names(["event_id", "em"])
    with pytest.raises(ColumnContractError, match="more than once"):
        normalize_column_names(["event_id", "EVENT_ID", "event_time"])


def test_results_are_matched_by_id_when_gravity_reorders_or_omits_them():
    events = [{"event_id": "a"}, {"event_id": "b"}, {"event_id": "c"}]
    answer = [{"event_id": "c", "status": "ok"}, {"event_id": "a", "status": "duplicate"}]
    results = match_results(keys_of(events), answer)
    assert [(r.event_id, r.status) for r in results] == [("a", "duplicate"), ("b", "missing"), ("c", "ok")]


def test_a_refused_batch_is_split_until_each_bad_event_stands_alone():
    calls = []

    def send(events):
        calls.append(len(events))
        if any(e["event_id"] in {"3", "9"} for e in events):
            raise GravityRequestRejected(400, "invalid event in batch")
        return [EventResult(e["event_id"], "ok") for e in events]

    outcomes, error = send_with_split(send, [{"event_id": str(i)} for i in range(16)])

    assert [o.bucket for o in outcomes].count("delivered") == 14
    assert [i for i, o in enumerate(outcomes) if o.bucket == "rejected"] == [3, 9]
    assert outcomes[3].detail == "HTTP 400: invalid event in batch"
    assert len(calls) < 16, "halving isolates 2 bad events in far fewer requests than one per event"
    assert error is None


def test_resume_log_restores_only_chunks_whose_rows_are_unchanged():
    store = DictStore()
    first_try = ResumeLog(store, "query-1", min_interval=0)
    digest0 = chunk_digest(["P", "P"], ["1", "2"])
    first_try.chunk_completed(0, digest0, Tally({"bucket.delivered": 2, "sent": 2}))
    first_try.batch_acknowledged(1, "d1", 0, 4, Tally({"bucket.delivered": 5}))

    retry = ResumeLog(store, "query-1")
    assert retry.restore(0, digest0).tally["bucket.delivered"] == 2
    partial = retry.restore(1, "d1")
    assert not partial.complete and partial.ranges == [(0, 4)]
    assert ResumeLog(store, "another-query").restore(0, digest0) is None
    moved = ResumeLog(store, "query-1")
    assert moved.restore(0, "other-rows") is None
    assert moved.restore(1, "d1") is None, "after one mismatch nothing more is skipped"
    retry.finish()
    assert STATE_KEY not in store.values


def test_summary_table_and_invariant():
    tally = Tally()
    for bucket, count in (("delivered", 7), ("duplicate", 1), ("invalid", 2)):
        for _ in range(count):
            tally.count_row(bucket, "bad_currency" if bucket == "invalid" else None)
    tally["sent"] = 8
    tally["coverage.em"] = 4

    summary = build_summary(tally, requests=1, retries=0, seconds=2.0, dry_run=False)

    assert summary["rows_read"] == 10
    assert summary["invalid_reasons"] == {"bad_currency": 2}
    assert summary["match_key_coverage"]["em"] == 0.5
    assert summary["error_rate"] == 0.2
    table = format_summary(summary)
    assert "delivered" in table and "bad_currency" in table and "em 50%" in table


def test_progress_is_logged_while_a_run_goes_on(caplog):
    caplog.set_level(logging.INFO)
    pipeline = ConversionPipeline(settings=EventSettings(event_name="Lead"), sender=None, progress_interval=0)
    frame = pd.DataFrame({"event_id": ["1", "2"], "event_time": [1_767_225_600, 1_767_225_600]})

    pipeline.run([frame, frame.assign(event_id=["3", "4"])])

    assert "Progress: 4 rows read" in caplog.text


def test_once_gravity_gives_up_the_rest_of_the_window_is_counted_not_sent():
    calls = []

    def unavailable(events):
        calls.append(len(events))
        raise GravityUnavailableError(6, 503, "HTTP 503")

    pipeline = ConversionPipeline(
        settings=EventSettings(event_name="Lead"), sender=FunctionSender(unavailable), batch_size=100, max_concurrency=1
    )
    frame = pd.DataFrame({"event_id": [str(i) for i in range(5_000)], "event_time": [1_767_225_600] * 5_000})

    result = pipeline.run([frame, frame.assign(event_id=[f"b{i}" for i in range(5_000)])])

    assert result.failure and result.failure.retryable and "HTTP 503" in result.failure.message
    assert result.summary["undelivered"] == 10_000, "the second chunk is read and counted, not sent"
    assert result.summary["rows_read"] == 10_000
    assert len(calls) <= 3, "no more requests once Gravity is known to be down"


def test_a_failing_state_store_switches_resume_off_without_failing_the_run(caplog):
    class BrokenStore(DictStore):
        def set(self, key, value):
            raise ConnectionError("api-server unreachable")

    caplog.set_level(logging.WARNING)
    resume = ResumeLog(BrokenStore(), "query-1", min_interval=0)
    resume.chunk_completed(0, "d0", Tally({"bucket.delivered": 1}))
    resume.chunk_completed(1, "d1", Tally({"bucket.delivered": 1}))

    assert resume.store is None
    assert caplog.text.count("Could not save the progress") == 1


def test_a_resumed_try_accounts_for_every_row_including_invalid_rows_inside_acknowledged_batches():
    store = DictStore()
    times = [None if i % 7 == 3 else 1_767_225_600 for i in range(100)]
    frame = pd.DataFrame({"event_id": [f"e{i}" for i in range(100)], "event_time": times}, dtype=object)
    valid = sum(t is not None for t in times)
    sent_first, sent_second = [], []

    def flaky(events):
        if len(sent_first) >= 3:
            raise GravityUnavailableError(2, 503, "HTTP 503")
        sent_first.append(len(events))
        return [EventResult(e["event_id"], "ok") for e in events]

    def healthy(events):
        sent_second.append(len(events))
        return [EventResult(e["event_id"], "ok") for e in events]

    first = run_with_resume(store, flaky, [frame.copy()])
    second = run_with_resume(store, healthy, [frame.copy()])

    assert first.failure
    assert second.failure is None
    assert sum(sent_second) == valid - sum(sent_first), "acknowledged batches are not sent again"
    summary = second.summary
    assert summary["rows_read"] == 100
    assert (summary["delivered"], summary["invalid"]) == (valid, 100 - valid)
    assert summary["invalid_reasons"] == {"missing_event_time": 100 - valid}


@pytest.mark.parametrize(
    ("naive", "utc"),
    [
        (dt.datetime(2026, 11, 1, 1, 30), dt.datetime(2026, 11, 1, 5, 30)),  # overlap: the earlier instant (EDT)
        (dt.datetime(2026, 3, 8, 2, 30), dt.datetime(2026, 3, 8, 7, 30)),  # gap: shifted forward by its hour
    ],
    ids=["overlap", "gap"],
)
def test_dst_overlaps_and_gaps_give_the_same_instant_on_every_path(naive, utc):
    """Issue 9, defect 10: the datetime64 path used to refuse what the object path accepted."""
    expected = utc.replace(tzinfo=dt.UTC).timestamp()
    paths = {
        "datetime64": pd.Series([naive, dt.datetime(2026, 1, 1)]),
        "object": pd.Series([naive, "2026-01-01T00:00:00"], dtype=object),
        "iso text": pd.Series([naive.isoformat()], dtype=object),
    }
    assert str(paths["datetime64"].dtype).startswith("datetime64")

    for path, values in paths.items():
        seconds, _ = event_time_seconds(values, "America/New_York")
        assert seconds[0] == expected, path


def test_one_event_id_under_two_event_names_never_shares_a_request_so_outcomes_cannot_swap():
    """Issue 9, defect 13: results name the event_id only and may come back in any order."""
    requests: list[list[tuple[str, str]]] = []

    def reversed_answers_without_names(events):
        requests.append([(e["event_name"], e["event_id"]) for e in events])
        return match_results(
            keys_of(events),
            [
                {"event_id": e["event_id"], "status": "error" if e["event_name"] == "Lead" else "ok", "error": "no"}
                for e in reversed(events)
            ],
        )

    frame = pd.DataFrame(
        {
            "event_id": ["a", "a", "b", "b", "c"],
            "event_name": ["Purchase", "Lead", "Purchase", "Lead", "Purchase"],
            "event_time": [1_767_225_600] * 5,
        }
    )
    pipeline = ConversionPipeline(
        settings=EventSettings(),
        sender=FunctionSender(reversed_answers_without_names),
        batch_size=1_000,
        clock=lambda: 1_767_230_000,
    )

    summary = pipeline.run([frame]).summary

    for request in requests:
        ids = [event_id for _, event_id in request]
        assert len(ids) == len(set(ids)), request
    assert (summary["delivered"], summary["rejected"]) == (3, 2)


def test_results_that_disagree_or_name_unknown_events_leave_the_event_unsettled():
    events = [
        {"event_name": "P", "event_id": "1"},
        {"event_name": "P", "event_id": "2"},
        {"event_name": "P", "event_id": "3"},
    ]
    answer = [
        {"event_id": "1", "status": "ok"},
        {"event_id": "1", "status": "error", "error": "x"},
        {"event_id": "2", "status": "ok"},
        {"event_id": "zzz", "status": "ok"},
        {"status": "ok"},
        "not a result",
    ]

    assert [result.status for result in match_results(keys_of(events), answer)] == ["missing", "ok", "missing"]


def test_resume_state_stays_small_with_thousands_of_distinct_gravity_messages():
    """Issue 9, defect 14: 20,000 per-event messages used to make a 2.5 MB state."""
    store = DictStore()
    frame = pd.DataFrame({"event_id": [f"e{i}" for i in range(20_000)], "event_time": [1_767_225_600] * 20_000})

    def every_event_refused_differently(events):
        if events[0]["event_id"] == "e19000":  # the last batch: the run fails and keeps its state for the retry
            raise GravityUnavailableError(2, 503, "HTTP 503")
        return [EventResult(e["event_id"], "error", f"field x of event {e['event_id']} is wrong") for e in events]

    pipeline = ConversionPipeline(
        settings=EventSettings(event_name="Lead"),
        sender=FunctionSender(every_event_refused_differently),
        max_concurrency=1,
        resume=ResumeLog(store, "query-1", min_interval=0),
        clock=lambda: 1_767_230_000,
    )
    frames = [frame.iloc[start : start + 2_000].reset_index(drop=True) for start in range(0, 20_000, 2_000)]
    result = pipeline.run(frames)
    summary = result.summary

    assert result.failure and result.failure.retryable
    assert (summary["rejected"], summary["undelivered"]) == (19_000, 1_000)
    assert len(summary["rejected_errors"]) == 21
    assert summary["rejected_errors"]["(other messages)"] == 19_000 - 20
    assert len(json.dumps(store.values)) < 20_000
    assert ResumeLog(store, "query-1").messages.total() == 19_000


def test_after_a_change_of_row_order_gravitys_earlier_messages_are_not_counted_twice():
    """An adversarial review found ``rejected_errors`` adding up to twice ``rejected`` after such a resume."""
    store = DictStore()
    frame = pd.DataFrame({"event_id": [f"e{i}" for i in range(40)], "event_time": [1_767_225_600] * 40})
    calls = []

    def refuse_all(events):
        return [EventResult(e["event_id"], "error", "bad") for e in events]

    def refuse_then_fail(events):
        calls.append(len(events))
        if len(calls) > 1:
            raise GravityUnavailableError(2, 503, "HTTP 503")
        return [EventResult(e["event_id"], "error", "bad") for e in events]

    run_with_resume(
        store, refuse_then_fail, [frame.iloc[:20].reset_index(drop=True), frame.iloc[20:].reset_index(drop=True)]
    )
    shuffled = frame.iloc[::-1].reset_index(drop=True)
    second = run_with_resume(store, refuse_all, [shuffled]).summary

    assert second["rejected"] == 40
    assert sum(second["rejected_errors"].values()) == second["rejected"]


def test_a_decimal_too_small_or_large_to_write_is_unreadable_not_zero():
    from decimal import Decimal

    from airflow_provider_gravity.conversions.cells import UnreadableCell, cell_text

    for value in (Decimal("1E-10000000"), Decimal("1E+10000000")):
        with pytest.raises(UnreadableCell):
            cell_text(value)
    assert cell_text(Decimal("0.000123")) == "0.000123"


def test_results_in_order_keep_attribution_and_names_and_numeric_ids_match_their_text():
    keys = [("Purchase", "1"), ("Purchase", "2"), ("Lead", "3"), ("Purchase", "4")]
    in_order = [
        {"event_id": "1", "status": "ok", "attributed": True},
        {"event_id": "2", "status": "ok", "attributed": "yes"},  # not a bool: not known
        {"event_id": "3", "status": "ok", "attributed": False},
        {"event_id": "4", "status": "duplicate"},
    ]
    assert match_results(keys, in_order) == [
        EventResult("1", "ok", None, True),
        EventResult("2", "ok", None, None),
        EventResult("3", "ok", None, False),
        EventResult("4", "duplicate", None, None),
    ]
    # Ids Gravity writes as numbers, and results naming their event, still pair by position.
    numeric = [{"event_id": 1, "status": "ok"}, {"event_id": 2, "status": "ok", "event_name": "Purchase"}]
    assert [r.status for r in match_results(keys[:2], numeric)] == ["ok", "ok"]
    # A result naming another event at that position is not this event's.
    named_wrong = [{"event_id": "1", "status": "ok", "event_name": "Lead"}, {"event_id": "2", "status": "ok"}]
    assert [r.status for r in match_results(keys[:2], named_wrong)] == ["missing", "ok"]


@pytest.mark.parametrize(
    ("odd_answer", "expected"),
    [
        ({"event_id": "2", "status": "ok", "attributed": True}, EventResult("2", "ok", None, True)),
        ({"event_id": "2", "status": "OK"}, EventResult("2", "ok", None, None)),
        ({"event_id": "2", "status": "ok", "error": "late"}, EventResult("2", "ok", "late", None)),
        ({"event_id": "2", "status": "error"}, EventResult("2", "error", None, None)),
        ({"event_id": "2", "attributed": True}, EventResult("2", "missing", None, True)),
    ],
)
def test_one_answer_unlike_plain_ok_among_a_thousand_keeps_its_own_result_and_outcome(odd_answer, expected):
    keys = [("Purchase", str(number)) for number in range(1, 1001)]
    answers = [{"event_id": event_id, "status": "ok"} for _, event_id in keys]
    answers[1] = odd_answer
    results = match_results(keys, answers)
    plain = [EventResult(event_id, "ok", None, None) for _, event_id in keys]
    assert results == [*plain[:1], expected, *plain[2:]]
    outcomes, error = send_with_split(lambda events: results, keys)
    assert error is None
    assert outcomes == [outcome_of(result) for result in results]
    # Every answer plain: each event's own result, all delivered.
    assert match_results(keys, [{"event_id": event_id, "status": "ok"} for _, event_id in keys]) == plain
    assert send_with_split(lambda events: plain, keys)[0] == [outcome_of(plain[0])] * 1000
    # A sender that yields its results, or returns a tuple, gets the same outcomes (the protocol says list).
    assert send_with_split(lambda events: iter(results), keys) == (outcomes, None)
    assert send_with_split(lambda events: tuple(plain), keys)[0] == [outcome_of(plain[0])] * 1000


def test_the_client_s_adapter_keeps_requests_tls_settings_per_origin_and_ca_bundle(tmp_path):
    import requests
    from requests.adapters import HTTPAdapter

    from airflow_provider_gravity.conversions.api.client import GravityClient

    bundle = tmp_path / "bundle.pem"
    bundle.write_text("not read here")
    client = GravityClient("https://api.example.test", "k3y-for-this-test")
    adapter = client.session.get_adapter("https://api.example.test")
    plain = HTTPAdapter()
    request = requests.Request("POST", "https://api.example.test/gateway/events").prepare()
    other = requests.Request("POST", "https://other.example.test:8443/gateway/events").prepare()

    for verify in (True, str(bundle), str(tmp_path), False, str(bundle)):
        for prepared in (request, other, request):
            got = adapter.build_connection_pool_key_attributes(prepared, verify)
            assert got == plain.build_connection_pool_key_attributes(prepared, verify)
            got[1]["cert_reqs"] = "CERT_NONE"  # what a caller does to the answer stays its own
    assert adapter.build_connection_pool_key_attributes(request, True)[1]["cert_reqs"] == "CERT_REQUIRED"
    client.close()


@pytest.mark.parametrize("field", ["event_name", "action_source", "event_source_url"])
@pytest.mark.parametrize("value", [123, b"Purchase", 1.5, ["Purchase"]])
def test_settings_that_are_not_text_are_refused_by_name_before_any_row(field, value):
    from airflow_provider_gravity.conversions.events.build import EventSettings

    with pytest.raises(TypeError, match=f"^{field} must be text or None, got a {type(value).__name__}"):
        EventSettings(**{field: value})


@pytest.mark.parametrize("text", ["1_000", "\u0661\u0662\u0663", "\uff11\uff12", "1 000", "12,50"])
def test_amount_text_that_is_no_plain_number_is_a_bad_value_not_a_guess(text):
    from airflow_provider_gravity.conversions.events.fields import money_column

    values, reasons = money_column(pd.Series([text, "19.90", " 7 "], dtype="str"))

    assert values == [None, 19.9, 7]
    assert reasons == ["bad_value", None, None]


def test_an_unknown_match_key_of_a_megabyte_is_named_in_a_short_error():
    from airflow_provider_gravity.coverage_guard import check_guard_arguments

    for wrong in ({"x" * 1_000_000: 0.5}, {"em": "9" * 1_000_000}, ["em"] * 200_000):
        with pytest.raises(ValueError, match=r"\.\.\. \([0-9,]+ characters\)") as refused:
            check_guard_arguments(wrong, None)
        assert len(str(refused.value)) < 250
