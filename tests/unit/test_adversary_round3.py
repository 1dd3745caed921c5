"""Round 3 of the adversarial review: assets, the match-key guard's argument and the DAG window's lookback."""

from __future__ import annotations

import json
import urllib.parse

import pendulum
import pytest

from airflow_provider_gravity.assets import conversions_asset, create_asset, sanitize_uri
from airflow_provider_gravity.exceptions import GravityRunRefused
from airflow_provider_gravity.hooks.gravity import GravityHook
from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator

# -- 1. assets -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "connection",
    [
        {"conn_type": "gravity", "host": "127.0.0.1", "port": 8085, "password": "secret-key-1"},
        {"conn_type": "gravity", "host": "api.trygravity.ai", "port": 8443, "password": "secret-key-1"},
        "gravity://:secret-key-1@127.0.0.1:8085",  # the README's URI form, with a port
        {"conn_type": "gravity", "host": "https://api.example.com/gravity", "port": 8443, "password": "secret-key-1"},
        {"conn_type": "gravity", "host": "http://[::1]", "port": 8085, "password": "secret-key-1"},
    ],
)
def test_the_asset_names_the_port_the_hook_sends_to(monkeypatch, connection):
    """The port field is part of the base URL the hook sends to: two endpoints must not share one asset."""
    value = connection if isinstance(connection, str) else json.dumps(connection)
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_PORTED", value)

    base_url = GravityHook("gravity_ported").client.base_url
    asset = conversions_asset("gravity_ported", "Purchase")

    assert asset.uri == f"gravity://{urllib.parse.urlsplit(base_url).netloc}/conversions/Purchase"


@pytest.mark.parametrize(
    ("host", "port", "base_url"),
    [
        # The port field went after the path: the requests went to port 443, /gravity:8443/gateway/events.
        ("https://api.example.com/gravity", 8443, "https://api.example.com:8443/gravity"),
        ("https://api.example.com:8443", 8443, "https://api.example.com:8443"),  # was https://...:8443:8443
        ("api.example.com", 8443, "https://api.example.com:8443"),
        ("http://[::1]", 8085, "http://[::1]:8085"),
    ],
)
def test_the_hook_puts_the_connections_port_field_in_the_base_urls_authority(monkeypatch, host, port, base_url):
    monkeypatch.setenv(
        "AIRFLOW_CONN_GRAVITY_PORTED",
        json.dumps({"conn_type": "gravity", "host": host, "port": port, "password": "secret-key-1"}),
    )

    assert GravityHook("gravity_ported").client.base_url == base_url


def test_a_port_in_the_host_field_is_not_doubled_by_the_port_field(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_GRAVITY_TWICE",
        json.dumps({"conn_type": "gravity", "host": "https://api.trygravity.ai:8443", "port": 8443}),
    )

    assert conversions_asset("gravity_twice", "Lead").uri == "gravity://api.trygravity.ai:8443/conversions/Lead"


def test_a_trailing_dot_names_the_same_host_as_without_it():
    with_dot = create_asset(host="API.trygravity.ai.", event_name="Purchase")

    assert with_dot.uri == with_dot.name == "gravity://api.trygravity.ai/conversions/Purchase"
    with pytest.raises(ValueError, match="must contain a host"):
        sanitize_uri(urllib.parse.urlsplit("gravity://./conversions/Purchase"))


@pytest.mark.parametrize("netloc", ["host:abc", "host:99999", "user:s3cr3t/x"])
def test_a_port_that_is_not_one_is_refused_in_the_uri_formats_words_without_quoting_it(netloc):
    """A password with a slash in a base URL's user info splits into a "port": it must not reach the log."""
    uri = urllib.parse.urlsplit(f"gravity://{netloc.partition('/')[0]}/conversions/Purchase")

    with pytest.raises(ValueError, match="gravity://") as refused:
        sanitize_uri(uri)

    assert "abc" not in str(refused.value) and "s3cr3t" not in str(refused.value)
    assert "99999" not in str(refused.value)


def test_a_connection_whose_user_info_holds_a_slash_never_puts_the_key_in_the_asset_error(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_GRAVITY_USERINFO",
        json.dumps({"conn_type": "gravity", "host": "https://user:s3cr3t/tail@api.trygravity.ai"}),
    )

    with pytest.raises(ValueError) as refused:
        conversions_asset("gravity_userinfo", "Purchase")

    assert "s3cr3t" not in str(refused.value) and "tail" not in str(refused.value)


# -- 2. the match-key guard's min_match_coverage ---------------------------------------------------------


def _operator(min_match_coverage) -> SendConversionsOperator:
    return SendConversionsOperator(
        task_id="send", sql="SELECT 1", conn_id="nowhere", min_match_coverage=min_match_coverage
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"em": "0.2"}', r"min_match_coverage\['em'\] is a share between 0 and 1, got '0.2'"),
        ('{"em": null}', r"min_match_coverage\['em'\] is a share between 0 and 1, got None"),
        ('{"em": [0.2]}', r"min_match_coverage\['em'\] is a share between 0 and 1, got \[0.2\]"),
        ('{"em": true}', r"min_match_coverage\['em'\] is a share between 0 and 1, got True"),
        ("[" * 100_000, "not JSON"),
        ('{"em": ' * 100_000, "not JSON"),
    ],
)
def test_hostile_min_match_coverage_text_is_refused_in_words_before_anything_is_read(text, words):
    operator = _operator(text)

    with pytest.raises(GravityRunRefused, match=words):
        operator._coverage_floors({})


@pytest.mark.parametrize(
    ("floors", "words"),
    [
        ({"em": "0.2"}, r"min_match_coverage\['em'\] is a share between 0 and 1, got '0.2'"),
        ({"em": None}, r"got None"),
        ({"em": True}, r"got True"),
        ([("em", 0.5)], "min_match_coverage must be a mapping"),
        ([], "min_match_coverage must be a mapping"),
    ],
)
def test_a_min_match_coverage_that_is_no_mapping_of_shares_is_refused_when_the_dag_is_parsed(floors, words):
    with pytest.raises(ValueError, match=words):
        _operator(floors)


def test_max_coverage_drop_as_text_is_refused_in_words_when_the_dag_is_parsed():
    with pytest.raises(ValueError, match="max_coverage_drop is a share"):
        SendConversionsOperator(task_id="send", sql="SELECT 1", conn_id="nowhere", max_coverage_drop="0.5")


# -- 2b. the DAGs' lookback_days -------------------------------------------------------------------------


NIGHT_START = pendulum.datetime(2026, 6, 2, 3)
NIGHT_END = pendulum.datetime(2026, 6, 3, 3)


def _window(module, **params):
    return module.resolve_window(
        params={"delivery_log_table": "gravity_delivery_log", **params},
        data_interval_start=NIGHT_START,
        data_interval_end=NIGHT_END,
        logical_date=NIGHT_START,
    )


@pytest.mark.parametrize("days", [740_000, 1_000_000, 999_999_999, 10**9, 10**12, 10**100])
def test_a_lookback_reaching_before_year_1_is_refused_in_words(gravity_window, days):
    with pytest.raises(gravity_window.WindowError, match="lookback_days"):
        _window(gravity_window, lookback_days=days)


@pytest.mark.parametrize("days", [400_000, 739_000, 739_768])
def test_a_lookback_of_centuries_starts_at_a_four_digit_year_that_sql_reads_as_that_year(gravity_window, days):
    """PostgreSQL reads '3-02-08' as 2008-03-02, and SQLite's text comparison puts it after 2026."""
    window = _window(gravity_window, lookback_days=days)

    expected = (NIGHT_START - pendulum.duration(days=days)).naive()
    assert window.start == f"{expected.year:04d}-{expected:%m-%d %H:%M:%S}"
    assert window.start < window.night_start < window.end  # also as text, as SQLite compares them


def test_an_explicit_window_of_an_early_year_is_written_with_four_digits(gravity_window):
    window = gravity_window.resolve_window(
        params={"window_start": "0050-01-01", "window_end": "2026-01-01"},
        data_interval_start=None,
        data_interval_end=None,
        logical_date=None,
    )

    assert window.start == "0050-01-01 00:00:00"


@pytest.mark.parametrize(
    ("start", "end"),
    [("0001-01-01T00:00:00+01:00", "2026-01-01"), ("2026-01-01", "9999-12-31T23:59:59-01:00")],
)
def test_an_explicit_window_outside_the_years_1_to_9999_in_utc_is_refused_in_words(gravity_window, start, end):
    with pytest.raises(gravity_window.WindowError, match="outside the years 1 to 9999"):
        gravity_window.resolve_window(
            params={"window_start": start, "window_end": end},
            data_interval_start=None,
            data_interval_end=None,
            logical_date=None,
        )
