"""A large seeded comparison of normalize_phone with phonenumbers, and the rare cases it has turned up.

The hypothesis tests explore shapes; this one brings volume (tens of thousands of numbers in every
region) so that branches of phonenumbers taken by a fraction of a percent of inputs are exercised.
"""

from __future__ import annotations

import random

import pandas as pd
import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat

from airflow_provider_gravity.conversions.pii import normalize_phone
from airflow_provider_gravity.conversions.pii.phone_metadata_path import DEFER, parse_to_e164

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)

# Inputs where a simplified reading of phonenumbers' rules gives a different answer (found by this
# differential test on mutated implementations); each must keep matching phonenumbers.
RARE_CASES = [
    (" 441344156789 ", "JE"),  # country code of the region typed without "+", number too long without it
    ("11 201-255-0123", "VI"),
    ("+3758011234567", "NA"),  # national prefix kept because the number is only valid with it
    ("37080812345", "LT"),
    ("16505551212", "US"),
    ("0044 20 8366 1177", "US"),
    ("011 44 20 8366 1177", "US"),
    ("+44 (0)20 8366 1177", "GB"),
    ("(506) 234-5678", "US"),  # Canadian number parsed with region US
    ("+1 268 464 1234", "US"),  # Antigua: shares country code 1, found by leading digits
    ("00", "GB"),
    ("+0 20 8366 1177", "GB"),
    ("0000000000", "IT"),
]


def _reference(raw: str, region: str | None) -> str | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def _examples() -> list[phonenumbers.PhoneNumber]:
    numbers = []
    for region in REGIONS:
        for number_type in range(12):
            example = phonenumbers.example_number_for_type(region, number_type)
            if example is not None:
                numbers.append(example)
    return numbers


def _written(rng: random.Random, number: phonenumbers.PhoneNumber, calling_from: str) -> str:
    style = rng.randrange(6)
    if style == 0:
        text = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    elif style == 1:
        text = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    elif style == 2:
        text = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    elif style == 3:
        text = f"{number.country_code}{phonenumbers.national_significant_number(number)}"
    elif style == 4:
        text = phonenumbers.format_out_of_country_calling_number(number, calling_from)
    else:
        text = phonenumbers.national_significant_number(number)
    characters = list(text)
    for _ in range(rng.randrange(3)):
        digits = [index for index, character in enumerate(characters) if character.isdigit()]
        if digits and rng.random() < 0.5:
            characters[rng.choice(digits)] = str(rng.randrange(10))
        elif digits and rng.random() < 0.5:
            del characters[rng.choice(digits)]
        else:
            characters.insert(rng.randrange(len(characters) + 1), str(rng.randrange(10)))
    text = "".join(characters)
    if rng.random() < 0.3:
        text = text.replace(" ", rng.choice(["-", ".", "", "  "]))
    if rng.random() < 0.1:
        text = f"({text[:3]}) {text[3:]}"
    if rng.random() < 0.1:
        text = f" {text} "
    if rng.random() < 0.1:
        text = rng.choice(["00", "011", "0", "1", "+"]) + text.lstrip("+")
    return text


@pytest.mark.parametrize("seed", [1, 2])
def test_normalize_phone_matches_phonenumbers_on_many_generated_numbers(seed: int) -> None:
    rng = random.Random(seed)
    examples = _examples()
    pairs = []
    for _ in range(12_000):
        number = rng.choice(examples)
        home = phonenumbers.region_code_for_number(number) or "US"
        region = rng.choice(REGIONS) if rng.random() < 0.3 else home
        pairs.append((_written(rng, number, rng.choice(REGIONS)), region))
    raws = pd.Series([raw for raw, _ in pairs], dtype=object)
    regions = pd.Series([region for _, region in pairs], dtype=object)

    normalized = normalize_phone(raws, regions)

    mismatches = [
        (raw, region, got, want)
        for (raw, region), got, want in zip(
            pairs,
            [None if pd.isna(value) else value for value in normalized],
            [_reference(raw, region) for raw, region in pairs],
            strict=True,
        )
        if got != want
    ]
    assert mismatches == []
    answered_by_metadata = sum(parse_to_e164(raw, region) is not DEFER for raw, region in pairs)
    assert answered_by_metadata > 0.8 * len(pairs)  # the comparison covers the fast path, not the fallback


@pytest.mark.parametrize(("raw", "region"), RARE_CASES)
def test_rare_case_matches_phonenumbers(raw: str, region: str) -> None:
    got = normalize_phone(pd.Series([raw]), region).iloc[0]
    assert (None if pd.isna(got) else got) == _reference(raw, region)
