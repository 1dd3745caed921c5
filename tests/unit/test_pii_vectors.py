"""Every golden vector of tests/data/pii_vectors.csv, through the public functions and hash_user_fields."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from airflow_provider_gravity.conversions.pii import normalize_email, normalize_name, normalize_phone, sha256_hex
from airflow_provider_gravity.conversions.pii.user_fields import hash_user_fields

VECTORS_PATH = Path(__file__).resolve().parents[1] / "data" / "pii_vectors.csv"


def _load_vectors() -> list[dict[str, str]]:
    with VECTORS_PATH.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


VECTORS = _load_vectors()


def _vector_id(vector: dict[str, str]) -> str:
    return f"{vector['field']}:{vector['raw']!r}:{vector['region'] or '-'}"


def _normalize(vector: dict[str, str]) -> object:
    raw = pd.Series([vector["raw"]], dtype=object)
    if vector["field"] == "em":
        return normalize_email(raw).iloc[0]
    if vector["field"] == "ph":
        return normalize_phone(raw, vector["region"]).iloc[0]
    return normalize_name(raw).iloc[0]


def test_vectors_cover_every_field() -> None:
    assert {vector["field"] for vector in VECTORS} == {"em", "ph", "fn"}
    assert len(VECTORS) >= 29


@pytest.mark.parametrize("vector", VECTORS, ids=_vector_id)
def test_public_function_gives_the_normalized_value(vector: dict[str, str]) -> None:
    normalized = _normalize(vector)
    if vector["normalized"]:
        assert normalized == vector["normalized"]
    else:
        assert pd.isna(normalized)


@pytest.mark.parametrize("vector", [v for v in VECTORS if v["normalized"]], ids=_vector_id)
def test_sha256_hex_of_the_normalized_value_gives_the_digest(vector: dict[str, str]) -> None:
    normalized = vector["normalized"]
    if vector["field"] == "ph":
        normalized = normalized.removeprefix("+")  # phones are hashed as E.164 digits without "+"
    assert sha256_hex(pd.Series([normalized])).iloc[0] == vector["sha256"]


@pytest.mark.parametrize("vector", VECTORS, ids=_vector_id)
def test_hash_user_fields_sends_the_digest_or_drops_the_value(vector: dict[str, str]) -> None:
    column = vector["field"]
    frame = pd.DataFrame({column: [vector["raw"]], "country": [vector["region"] or None]})

    hashed = hash_user_fields(frame, default_region="US")

    cell = hashed.fields[column][0]
    expected = vector["sha256"] or None
    if column in ("em", "ph"):
        assert cell == ([expected] if expected else None)
    else:
        assert cell == expected
    present = bool(vector["raw"].strip())
    dropped = present and not vector["normalized"]
    reason = {"em": "invalid_email", "ph": "invalid_phone", "fn": "empty_first_name"}[column]
    assert hashed.drops[reason] == int(dropped)


def test_hash_user_fields_with_plus_hashes_the_full_e164() -> None:
    frame = pd.DataFrame({"ph": ["(650) 555-1212"]})

    hashed = hash_user_fields(frame, phone_with_plus=True)

    assert hashed.fields["ph"] == [[sha256_hex(pd.Series(["+16505551212"])).iloc[0]]]
