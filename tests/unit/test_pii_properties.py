"""Property tests: phone normalization equals phonenumbers, normalization is idempotent, NA is NA."""

from __future__ import annotations

import importlib.util
import unicodedata

import numpy as np
import pandas as pd
import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from airflow_provider_gravity.conversions.pii import normalize_email, normalize_name, normalize_phone, sha256_hex
from tests.support.examples import examples

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
COMMON_REGIONS = ["US", "GB", "FR", "DE", "JP", "BR", "IN", "AU", "CA", "ES", "IT", "MX", "CN", "AR", "NL", "ZA"]
NUMBER_TYPES = [
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.MOBILE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER,
    PhoneNumberType.PAGER,
    PhoneNumberType.UAN,
    PhoneNumberType.VOICEMAIL,
]
FULL_WIDTH_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")
BACKENDS = [
    "phonenumbers",
    pytest.param(
        "rphonenumbers",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("rphonenumbers") is None, reason="optional rphonenumbers not installed"
        ),
    ),
]
SETTINGS = settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_e164(library, raw: str, region: str | None) -> str | None:
    """What a careful user gets from the library itself: parse, validate, format as E.164."""
    try:
        number = library.parse(raw, region)
    except Exception:
        return None
    if not library.is_valid_number(number):
        return None
    return library.format_number(number, PhoneNumberFormat.E164)


def _as_text(number: phonenumbers.PhoneNumber, style: str, calling_from: str) -> str:
    if style == "national":
        return phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    if style == "international":
        return phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    if style == "e164":
        return phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if style == "rfc3966":
        return phonenumbers.format_number(number, PhoneNumberFormat.RFC3966)
    if style == "dialled_from_abroad":
        return phonenumbers.format_out_of_country_calling_number(number, calling_from)
    if style == "country_code_and_number":
        return f"{number.country_code}{phonenumbers.national_significant_number(number)}"
    return phonenumbers.national_significant_number(number)


@st.composite
def written_phones(draw: st.DrawFn, regions: list[str] = REGIONS) -> tuple[str, str]:
    """A realistic number of some region, written as people write them (typos included), and a parse region.

    Only digits, spaces, ``-``, ``.``, parentheses and a leading ``+``: the inputs the metadata path
    answers itself rather than passing to phonenumbers.
    """
    home = draw(st.sampled_from(regions))
    number_type = draw(st.sampled_from(NUMBER_TYPES))
    example = phonenumbers.example_number_for_type(home, number_type) or phonenumbers.example_number(home)
    parse_region = draw(st.sampled_from([home, home, home, draw(st.sampled_from(regions))]))
    if example is None:
        return draw(st.text("0123456789", min_size=2, max_size=15)), parse_region
    style = draw(
        st.sampled_from(
            [
                "national",
                "international",
                "e164",
                "dialled_from_abroad",
                "country_code_and_number",
                "nsn",
            ]
        )
    )
    characters = list(_as_text(example, style, draw(st.sampled_from(regions))))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # typos: a digit replaced, added or lost
        position = draw(st.integers(0, len(characters)))
        digit = draw(st.sampled_from("0123456789"))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "insert" or position == len(characters):
            characters.insert(position, digit)
        elif action == "replace":
            characters[position] = digit
        else:
            del characters[position]
    text = "".join(characters).replace(" ", draw(st.sampled_from([" ", "-", ".", "", "  ", " - "])))
    if draw(st.booleans()):
        text = f"({text[:3]}) {text[3:]}"
    prefix = draw(st.sampled_from(["", "", "", "", "+", "00", "011", "0", "1", "+1", "810", "0011"]))
    text = prefix + (text.removeprefix("+") if prefix else text)
    return draw(st.sampled_from(["", " "])) + text + draw(st.sampled_from(["", " ", "-", ")"])), parse_region


@st.composite
def messy_phones(draw: st.DrawFn, regions: list[str] = REGIONS) -> tuple[str, str]:
    """A written number with what else turns up in a phone column: RFC 3966, extensions, full-width digits, junk."""
    text, parse_region = draw(written_phones(regions))
    text = draw(st.sampled_from(["", "tel:", "Tel: ", "＋", "++", "(", "phone "])) + text
    text += draw(st.sampled_from(["", " ext. 123", " x45", "#", ";ext=9", ";phone-context=+44", " (home)"]))
    if draw(st.booleans()):
        text = text.translate(FULL_WIDTH_DIGITS)
    if draw(st.booleans()):
        position = draw(st.integers(0, len(text)))
        text = text[:position] + draw(st.text(max_size=3)) + text[position:]
    return text, parse_region


PHONE_STRATEGIES = [written_phones(), messy_phones()]


def _values(series: pd.Series) -> list[str | None]:
    return [None if pd.isna(value) else value for value in series]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("phones", PHONE_STRATEGIES, ids=["written", "messy"])
@SETTINGS
@given(data=st.data())
def test_normalize_phone_with_row_regions_equals_the_library(
    backend: str, phones: st.SearchStrategy, data: st.DataObject
) -> None:
    library = importlib.import_module(backend)
    pairs = data.draw(st.lists(phones, min_size=1, max_size=30))
    raws = pd.Series([raw for raw, _ in pairs], dtype=object)
    regions = pd.Series([region for _, region in pairs], dtype=object)

    normalized = normalize_phone(raws, regions, backend=backend)

    assert _values(normalized) == [reference_e164(library, raw, region) for raw, region in pairs]


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(region=st.sampled_from(REGIONS), data=st.data())
def test_normalize_phone_with_one_region_equals_the_library(backend: str, region: str, data: st.DataObject) -> None:
    library = importlib.import_module(backend)
    strategy = st.one_of(written_phones([region]), messy_phones([region] + COMMON_REGIONS))
    raws = [raw for raw, _ in data.draw(st.lists(strategy, min_size=1, max_size=30))]

    normalized = normalize_phone(pd.Series(raws, dtype="string"), region, backend=backend)

    assert _values(normalized) == [reference_e164(library, raw, region) for raw in raws]


@SETTINGS
@given(pairs=st.lists(written_phones(), min_size=1, max_size=20), fallback=st.sampled_from(COMMON_REGIONS))
def test_missing_row_regions_fall_back_to_the_default_region(pairs: list[tuple[str, str]], fallback: str) -> None:
    raws = pd.Series([raw for raw, _ in pairs], dtype=object)
    regions = pd.Series([None if index % 2 else region for index, (_, region) in enumerate(pairs)], dtype=object)

    normalized = normalize_phone(raws, regions, default_region=fallback)

    expected = [
        reference_e164(phonenumbers, raw, fallback if index % 2 else region)
        for index, (raw, region) in enumerate(pairs)
    ]
    assert _values(normalized) == expected


@pytest.mark.skipif(importlib.util.find_spec("rphonenumbers") is None, reason="optional rphonenumbers not installed")
@SETTINGS
@given(pairs=st.lists(st.one_of(written_phones(COMMON_REGIONS), messy_phones(COMMON_REGIONS)), max_size=30))
def test_rphonenumbers_backend_equals_phonenumbers_in_common_regions(pairs: list[tuple[str, str]]) -> None:
    raws = pd.Series([raw for raw, _ in pairs], dtype=object)
    regions = pd.Series([region for _, region in pairs], dtype=object)

    fast = normalize_phone(raws, regions, backend="rphonenumbers")

    assert _values(fast) == [reference_e164(phonenumbers, raw, region) for raw, region in pairs]


@SETTINGS
@given(pairs=st.lists(written_phones(COMMON_REGIONS), min_size=1, max_size=20), again_in=st.sampled_from(REGIONS))
def test_normalizing_a_normalized_phone_changes_nothing(pairs: list[tuple[str, str]], again_in: str) -> None:
    once = normalize_phone(pd.Series([raw for raw, _ in pairs]), pd.Series([region for _, region in pairs]))

    twice = normalize_phone(once, again_in)

    assert _values(twice) == _values(once)


@SETTINGS
@given(emails=st.lists(st.one_of(st.emails(), st.text(max_size=30)).map(lambda s: f"  {s.upper()} "), max_size=20))
def test_normalizing_a_normalized_email_changes_nothing(emails: list[str]) -> None:
    once = normalize_email(pd.Series(emails, dtype=object))

    assert _values(normalize_email(once)) == _values(once)
    assert all(value is None or (value == value.strip().lower() and value.count("@") == 1) for value in _values(once))


@SETTINGS
@given(names=st.lists(st.text(max_size=20), max_size=20))
def test_normalizing_a_normalized_name_changes_nothing(names: list[str]) -> None:
    once = normalize_name(pd.Series(names, dtype=object))

    assert _values(normalize_name(once)) == _values(once)
    assert all(
        len(value) == 64 or all(unicodedata.category(ch)[0] in "LM" for ch in value) for value in _values(once) if value
    )


@SETTINGS
@given(values=st.lists(st.text(min_size=1, max_size=40).filter(str.strip), max_size=20))
def test_hashing_a_hash_changes_nothing(values: list[str]) -> None:
    once = sha256_hex(pd.Series(values, dtype=object))

    assert _values(sha256_hex(once)) == _values(once)
    assert all(len(digest) == 64 and digest == digest.lower() for digest in _values(once))


def test_an_uppercase_digest_passes_every_function_lowercased_and_unhashed() -> None:
    digest = "E323EC626319CA94EE8BFF2E4C87CF613BE6EA19919ED1364124E16807AB3176"
    values = pd.Series([f" {digest} "])

    for normalized in (
        normalize_email(values),
        normalize_name(values),
        normalize_phone(values, "US"),
        sha256_hex(values.str.strip()),
    ):
        assert normalized.iloc[0] == digest.lower()


MISSING_VALUES = [None, np.nan, pd.NA, "", "   ", "\t\n"]


@pytest.mark.parametrize("dtype", [object, "string", "str"])
@pytest.mark.parametrize("missing", MISSING_VALUES, ids=repr)
def test_every_kind_of_missing_value_gives_na(missing: object, dtype: object) -> None:
    values = pd.Series(["a@b.co", missing], dtype=dtype)

    results = [
        normalize_email(values),
        normalize_name(values),
        normalize_phone(values, "US"),
        normalize_phone(values, pd.Series(["GB", "GB"])),
        sha256_hex(values),
    ]

    for result in results:
        assert result.isna().iloc[1]
        assert list(result.index) == list(values.index)
