"""The Gravity connection's boolean extra read as Airflow reads text booleans (issue 20: no private parser)."""

from __future__ import annotations

import json

import pytest

from airflow_provider_gravity.hooks.gravity import GravityHook


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (True, True),
        (False, False),
        (None, False),
        ("true", True),
        (" Yes ", True),
        ("on", True),
        ("1", True),
        ("t", True),
        ("false", False),
        ("no", False),
        ("", False),
        (1, True),
        (0, False),
    ],
)
def test_hash_phone_with_plus_is_a_json_boolean_or_text_airflow_reads_as_one(monkeypatch, extra, expected):
    connection = {"conn_type": "gravity", "password": "k", "extra": {"hash_phone_with_plus": extra}}
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_PLUS", json.dumps(connection))

    assert GravityHook("gravity_plus").hash_phone_with_plus is expected


def test_a_connection_without_the_extra_hashes_phones_without_plus(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GRAVITY_PLUS", json.dumps({"conn_type": "gravity", "password": "k"}))

    assert GravityHook("gravity_plus").hash_phone_with_plus is False
