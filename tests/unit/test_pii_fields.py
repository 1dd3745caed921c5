"""hash_user_fields: list cells, external ids, drop counters, the run cache, plain JSON output, no plaintext."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from airflow_provider_gravity.conversions.pii.user_fields import HashedUserFields, PiiCache, hash_user_fields


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


A, B = digest("a@x.com"), digest("b@y.org")
LONDON = digest("442083661177")  # E.164 digits of +44 20 8366 1177
MOUNTAIN_VIEW = digest("16505551212")


@pytest.mark.parametrize(
    "cell",
    [
        ["B@y.org", "a@x.com", " b@Y.org "],
        ("B@y.org", "a@x.com", " b@Y.org "),
        np.array(["B@y.org", "a@x.com", " b@Y.org "], dtype=object),
        '["B@y.org", "a@x.com", " b@Y.org "]',
    ],
    ids=["list", "tuple", "numpy-array", "json-string"],
)
def test_email_list_cell_is_normalized_element_by_element_and_deduplicated_in_order(cell: object) -> None:
    frame = pd.DataFrame({"em": [cell, "a@x.com"]})

    hashed = hash_user_fields(frame)

    assert hashed.fields["em"] == [[B, A], [A]]


@pytest.mark.parametrize("empty", [[], (), np.array([], dtype=object), "[]", "  [ ] ", [None, " "]])
def test_empty_list_cell_leaves_the_field_absent(empty: object) -> None:
    frame = pd.DataFrame({"em": [empty], "ph": [empty], "external_id": [empty]})

    hashed = hash_user_fields(frame)

    assert hashed.fields == {"em": [None], "ph": [None], "external_id": [None]}
    assert hashed.drops["invalid_email"] == hashed.drops["invalid_phone"] == 0


def test_phone_list_cell_uses_the_row_country_and_counts_each_invalid_element() -> None:
    frame = pd.DataFrame(
        {
            "ph": [np.array(["020 8366 1177", "12", "+44 20 8366 1177"], dtype=object), '["(650) 555-1212", "x"]'],
            "country": ["gb", None],
        }
    )

    hashed = hash_user_fields(frame, default_region="US")

    assert hashed.fields["ph"] == [[LONDON], [MOUNTAIN_VIEW]]
    assert hashed.drops["invalid_phone"] == 2
    assert hashed.drops["invalid_country"] == 0


def test_unknown_country_falls_back_to_the_default_region_and_is_counted() -> None:
    frame = pd.DataFrame({"ph": ["(650) 555-1212", "020 8366 1177"], "country": ["Narnia", "UK"]})

    hashed = hash_user_fields(frame, default_region="US")

    assert hashed.fields["ph"] == [[MOUNTAIN_VIEW], None]  # the GB national number is not a US number
    assert hashed.drops == {**hashed.drops, "invalid_country": 2, "invalid_phone": 1}


def test_external_ids_are_plain_strings_never_hashed_and_integers_lose_no_digits() -> None:
    frame = pd.DataFrame({"external_id": [42, None, 7]})  # pandas makes this a float column: 42.0, NaN, 7.0
    lists = pd.DataFrame({"external_id": [[42, "42", " cust-9 ", 43], np.array([5, 5]), "[1, 2, 1]"]})

    assert frame["external_id"].dtype == np.float64
    assert hash_user_fields(frame).fields["external_id"] == [["42"], None, ["7"]]
    assert hash_user_fields(lists).fields["external_id"] == [["42", "cust-9", "43"], ["5"], ["1", "2"]]


def test_names_are_hashed_and_names_without_letters_are_counted() -> None:
    frame = pd.DataFrame({"fn": ["  Mary-Jane ", "123", None, "   "], "ln": ["O'Brien", "Núñez", "--", np.nan]})

    hashed = hash_user_fields(frame)

    assert hashed.fields["fn"] == [digest("maryjane"), None, None, None]
    assert hashed.fields["ln"] == [digest("obrien"), digest("núñez"), None, None]
    assert hashed.drops["empty_first_name"] == 1
    assert hashed.drops["empty_last_name"] == 1


@pytest.mark.parametrize("dtype", [object, "string", "str"])
def test_missing_values_are_absent_not_dropped_whatever_the_dtype(dtype: object) -> None:
    missing = [None, np.nan, pd.NA, "", "   "]
    frame = pd.DataFrame({column: pd.Series(missing, dtype=dtype) for column in ("em", "ph", "fn", "ln")})
    frame["external_id"] = pd.Series(missing, dtype=dtype)
    frame["country"] = pd.Series(missing, dtype=dtype)

    hashed = hash_user_fields(frame)

    assert all(cells == [None] * len(missing) for cells in hashed.fields.values())
    assert set(hashed.drops.values()) == {0}


def test_other_columns_are_ignored_and_absent_user_columns_are_not_reported() -> None:
    frame = pd.DataFrame({"event_id": ["o-1"], "value": [9.5], "em": ["a@x.com"]})

    hashed = hash_user_fields(frame)

    assert hashed.fields == {"em": [[A]]}


def test_rows_stay_aligned_with_a_non_default_index() -> None:
    frame = pd.DataFrame({"em": ["b@y.org", "nope", "a@x.com"]}, index=[10, 3, 7])

    assert hash_user_fields(frame).fields["em"] == [[B], None, [A]]


def test_a_run_cache_gives_the_same_fields_and_counts_every_row() -> None:
    chunks = [
        pd.DataFrame(
            {
                "em": ["a@x.com", "bad", "A@X.COM "],
                "ph": ["(650) 555-1212", "1", "020 8366 1177"],
                "country": ["US", "US", "GB"],
                "fn": ["Zoë", "?", "Zoë"],
                "external_id": [1, 2, 1],
            }
        ),
        pd.DataFrame(
            {
                "em": ["bad", "b@y.org", "a@x.com"],
                "ph": ["1", "020 8366 1177", "(650) 555-1212"],
                "country": ["US", "FR", "US"],
                "fn": ["?", "Zoë", None],
                "external_id": [2, 2, True],
            }
        ),
    ]
    cache = PiiCache()

    with_cache = [hash_user_fields(chunk, cache=cache) for chunk in chunks]
    without_cache = [hash_user_fields(chunk) for chunk in chunks]

    assert with_cache == without_cache
    assert [result.drops["invalid_email"] for result in with_cache] == [1, 1]
    assert [result.drops["invalid_phone"] for result in with_cache] == [1, 2]  # GB national number is not FR
    assert with_cache[1].fields["external_id"] == [["2"], ["2"], ["true"]]  # one text rendering: cells.cell_text


def test_the_result_is_plain_json_ready_python() -> None:
    frame = pd.DataFrame(
        {
            "em": pd.Series(["a@x.com", None], dtype="string"),
            "ph": [np.array(["020 8366 1177"]), 6505551212],
            "country": ["GB", "US"],
            "fn": ["Ann", "Bo"],
            "ln": ["Lee", "Li"],
            "external_id": np.array([4, 5]),
        }
    )

    hashed = hash_user_fields(frame)

    def plain(value: object) -> bool:
        if isinstance(value, list):
            return type(value) is list and all(plain(item) for item in value)
        return value is None or type(value) is str

    assert all(type(cells) is list and all(map(plain, cells)) for cells in hashed.fields.values())
    assert all(type(count) is int for count in hashed.drops.values())
    assert json.loads(json.dumps(hashed.fields)) == hashed.fields
    assert hashed.fields["ph"] == [[LONDON], [MOUNTAIN_VIEW]]


def test_default_region_must_be_a_known_region() -> None:
    with pytest.raises(ValueError, match="default_region"):
        hash_user_fields(pd.DataFrame({"ph": ["1"]}), default_region="XX")


PLAINTEXT = {
    "em": ["Privacy.Probe@Example.com", "not-an-email-probe", '["second.probe@example.org"]'],
    "ph": ["+44 20 8366 1177", "0123-probe-99", "(650) 555-1212"],
    "fn": ["Zebulon", "Ω-Ärnö", "Quintessa"],
    "ln": ["Quetzalcoatl", "Bartholomew", "!!!"],
    "country": ["GB", "Atlantis", "US"],
}
SECRETS = [
    "privacy.probe",
    "not-an-email-probe",
    "second.probe",
    "442083661177",
    "2083661177",
    "6505551212",
    "probe-99",
    "zebulon",
    "ärnö",
    "quintessa",
    "quetzalcoatl",
    "bartholomew",
    "atlantis",
]


@pytest.mark.parametrize("backend", ["phonenumbers", "rphonenumbers"])
def test_no_plaintext_in_the_result_or_the_logs(backend: str, caplog: pytest.LogCaptureFixture) -> None:
    if backend == "rphonenumbers":
        pytest.importorskip("rphonenumbers")
    caplog.set_level(logging.DEBUG)
    cache = PiiCache()

    hashed = hash_user_fields(pd.DataFrame(PLAINTEXT), phone_backend=backend, cache=cache)

    assert isinstance(hashed, HashedUserFields)
    visible = (repr(hashed) + json.dumps(hashed.fields) + json.dumps(hashed.drops) + caplog.text).lower()
    assert [secret for secret in SECRETS if secret in visible] == []
    assert hashed.fields["em"][0] == [digest("privacy.probe@example.com")]  # the probe was really processed


def test_conversions_import_without_airflow() -> None:
    code = (
        "import sys, airflow_provider_gravity.conversions, airflow_provider_gravity.conversions.pii.user_fields;"
        "loaded = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'));"
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)

    assert completed.returncode == 0, completed.stdout + completed.stderr


# Latin-1 and Latin Extended-A but U+0130, and Latin Extended Additional (Vietnamese).
LATIN_LETTERS = [chr(code) for code in [*range(0xC0, 0x180), *range(0x1E00, 0x1F00)] if code != 0x130]


@pytest.mark.parametrize("letter", LATIN_LETTERS)
def test_emails_lowercased_by_arrow_hash_as_python_lowercases_them(letter: str) -> None:
    email = f"Ab{letter}{letter.upper()}@Example.COM"
    expected = email.lower()

    hashed = hash_user_fields(pd.DataFrame({"em": [email]}))

    assert hashed.fields["em"] == [[digest(expected)]]


@pytest.mark.parametrize(
    ("email", "normalized"),
    [
        ("ΣΩΚΡΑΤΗΣ@EXAMPLE.GR", "σωκρατης@example.gr"),  # Python's final sigma, which Arrow's kernel lacks
        ("\u0130STANBUL@EXAMPLE.TR", "i\u0307stanbul@example.tr"),  # two characters in Python's lowercase
        ("\u00a0padded@example.com\u00a0", "padded@example.com"),  # Python strips a no-break space
        ("soft\u00adhyphen@example.com", "softhyphen@example.com"),  # a format character is removed
        ("\t Tabbed@Example.com \t", "tabbed@example.com"),
    ],
)
def test_emails_outside_the_arrow_path_are_normalized_by_python(email: str, normalized: str) -> None:
    hashed = hash_user_fields(pd.DataFrame({"em": pd.Series([email, "other@example.com"], dtype="str")}))

    assert hashed.fields["em"][0] == [digest(normalized)]


def test_the_run_remembers_at_most_max_entries_phones_across_all_regions_and_stays_exact() -> None:
    regions = ["US", "FR", "DE", "GB", "JP", "BR"]
    frame = pd.DataFrame(
        {
            "ph": [f"+1 650 555 {1000 + row:04d}" for row in range(60)],
            "country": [regions[row % len(regions)] for row in range(60)],
        }
    ).astype({"ph": "string", "country": "string"})
    cache = PiiCache(max_entries=25)

    sizes = []
    results = []
    for start in range(0, 60, 10):
        results.append(hash_user_fields(frame.iloc[start : start + 10].reset_index(drop=True), cache=cache))
        sizes.append(cache.entries)

    assert max(sizes) <= 25  # six regions, one bound: not 25 each
    expected = [hash_user_fields(frame.iloc[start : start + 10].reset_index(drop=True)) for start in range(0, 60, 10)]
    assert results == expected


def test_one_national_number_in_a_text_column_is_read_in_each_row_s_own_region() -> None:
    national = "020 8366 1177"  # a London number in GB, not a number in the US
    phones = [national, "(650) 555-1212", national, None, national, "  ", national]
    countries = ["GB", "US", None, "GB", "gb", "FR", "Narnia"]
    frame = pd.DataFrame({"ph": pd.array(phones, dtype="string"), "country": countries})

    hashed = hash_user_fields(frame, default_region="US", cache=PiiCache())

    assert hashed.fields["ph"] == [[LONDON], [MOUNTAIN_VIEW], None, None, [LONDON], None, None]
    assert hashed.texts["ph"].to_pylist() == [
        f'["{LONDON}"]',
        f'["{MOUNTAIN_VIEW}"]',
        None,
        None,
        f'["{LONDON}"]',
        None,
        None,
    ]
    # The same text read in the US (default region, twice: no country and an unknown one) is no number there.
    assert hashed.drops["invalid_phone"] == 2
    assert hashed.drops["invalid_country"] == 1


def test_phones_whose_hashes_collide_keep_their_own_digests_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_gravity.conversions.pii import user_fields

    phones = [f"+1 650 555 {1000 + row:04d}" for row in range(12)]
    # Besides valid phones, entries the table keeps another way: invalid ones, a list, a blank cell.
    others = ["12", "not a phone", '["+1 650 555 1000", "12"]', " "]
    cells = phones + others + phones[::-1] + others[::-1] + ["(650) 555-1003", None]
    frame = pd.DataFrame({"ph": cells}).astype({"ph": "string"})
    chunks = [frame.iloc[start : start + 7].reset_index(drop=True) for start in range(0, len(cells), 7)]
    expected = [hash_user_fields(chunk) for chunk in chunks]
    assert sum(result.drops["invalid_phone"] for result in expected) == 6
    # Every string of the run's phone table under one hash, or under one of two: each lookup is confirmed on
    # the string itself, so no phone takes another's digest or drop.
    for colliding in (lambda text: 7, lambda text: len(text) % 2):
        monkeypatch.setattr(user_fields, "hash", colliding, raising=False)
        cache = PiiCache()
        got = [hash_user_fields(chunk, cache=cache) for chunk in chunks]
        assert [result.fields for result in got] == [result.fields for result in expected]
        assert [result.drops for result in got] == [result.drops for result in expected]
        assert cache.entries == 17


def test_the_repr_of_hashed_fields_holds_no_value_only_the_drop_counts():
    frame = pd.DataFrame(
        {"external_id": ["customer-4711", "x\ud800"], "em": ["probe.person@example.com", None]}, dtype=object
    )
    shown = repr(hash_user_fields(frame))
    assert "customer-4711" not in shown and "probe.person" not in shown and "\ud800" not in shown
    assert "invalid_email" in shown


def test_a_column_arrow_holds_in_several_chunks_is_hashed_as_one_in_one_chunk():
    import pyarrow as pa

    emails = ["A@Example.com", None, " b@example.com", "not an email", "A@Example.com", "é@exämple.com"]
    ids = ["7", "x", None, "7", " 8 ", "[1,2]"]

    def chunked(values: list[str | None]) -> pd.Series:
        arrow = pa.chunked_array([pa.array(values[:2], pa.large_string()), pa.array(values[2:], pa.large_string())])
        return pd.Series(pd.arrays.ArrowStringArray(arrow))

    one = pd.DataFrame({"em": pd.Series(emails, dtype="str"), "external_id": pd.Series(ids, dtype="str")})
    several = pd.DataFrame({"em": chunked(emails), "external_id": chunked(ids)})
    assert several["em"].array._pa_array.num_chunks == 2  # the case under test
    expected, got = hash_user_fields(one), hash_user_fields(several)
    assert got.fields == expected.fields and got.drops == expected.drops
    assert got.fields["em"][0] == [digest("a@example.com")]
