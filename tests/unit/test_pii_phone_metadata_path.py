"""The shortcuts of the phone metadata path against what they replace: phonenumbers' walk over the regions
sharing a country code, and one validity regex for all lengths.

Each shortcut is exact by construction; these tests check the construction on the metadata installed.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass
from typing import cast

import phonenumbers
import pytest
from phonenumbers import PhoneMetadata, PhoneNumberFormat

from airflow_provider_gravity.conversions.pii.phone_metadata_path import (
    DEFER,
    _fixed_prefixes,
    _is_valid_in_first_matching_region,
    _Plan,
    _plan_for_region,
    _RegionDispatch,
    _validation_plans,
    _validator,
    parse_to_e164,
)
from tests.unit.test_pii_phone_differential import _reference

SHARED_COUNTRY_CODES = sorted(
    code for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items() if len(regions) > 1
)
NUMBER_TYPES = range(12)


def _example_national_numbers(regions: tuple[str, ...]) -> list[str]:
    numbers = set()
    for region in regions:
        for number_type in NUMBER_TYPES:
            example = phonenumbers.example_number_for_type(region, number_type)
            if example is not None:
                numbers.add(phonenumbers.national_significant_number(example))
    return sorted(numbers)


def _library_valid_for_region(country_code: int, national_number: str, region: str) -> bool:
    leading_zeros = len(national_number) - len(national_number.lstrip("0"))
    number = phonenumbers.PhoneNumber(
        country_code=country_code,
        national_number=int(national_number),
        italian_leading_zero=leading_zeros > 0 or None,
        number_of_leading_zeros=leading_zeros if leading_zeros > 1 else None,
    )
    assert phonenumbers.national_significant_number(number) == national_number
    return phonenumbers.is_valid_number_for_region(number, region)


@pytest.mark.parametrize("country_code", SHARED_COUNTRY_CODES)
def test_fixed_prefixes_are_exactly_what_leading_digits_match(country_code: int) -> None:
    for plan in _validation_plans(country_code):
        if plan is None or plan.leading_digits is None:
            continue
        prefixes = _fixed_prefixes(plan.leading_digits.pattern)
        if prefixes is None:
            continue
        longest = max(len(prefix) for prefix in prefixes)
        # The pattern has no repetition, so nothing past its longest prefix decides a match.
        for length in range(longest + 2):
            for digits in map("".join, itertools.product("0123456789", repeat=length)):
                expected = plan.leading_digits.match(digits) is not None
                assert any(digits.startswith(prefix) for prefix in prefixes) == expected, (plan.leading_digits, digits)


def test_fixed_prefixes_refuse_patterns_with_groups_or_repetition() -> None:
    assert _fixed_prefixes("8001|8[024]9") == {"8001", "809", "829", "849"}
    assert _fixed_prefixes("[02-689]|7[0-8]") == set("02345689") | {f"7{digit}" for digit in "012345678"}
    for pattern in ["74576|(?:16|7[56])24", "1\\d", "8[0-9]*", "(?:1)", "", "1|", "[^1]", "1$"]:
        assert _fixed_prefixes(pattern) is None, pattern


def test_the_dispatch_tables_cover_the_country_codes_they_should() -> None:
    dispatched = {code for code in SHARED_COUNTRY_CODES if _RegionDispatch.of(_validation_plans(code)) is not None}
    assert 1 in dispatched  # the reason for the tables: NANPA's 25 regions
    assert 44 not in dispatched  # the Isle of Man's leading digits have a group; the walk decides


@dataclass(frozen=True)
class _StandInPlan:
    """The two things the walk asks of a region: its leading digits and whether a number is valid there."""

    leading_digits: re.Pattern[str] | None
    valid: re.Pattern[str]

    def is_valid(self, national_number: str) -> bool:
        return self.valid.fullmatch(national_number) is not None


def test_region_dispatch_keeps_the_walk_order_where_regions_overlap() -> None:
    # Shapes the installed metadata lacks: a region without leading digits after one with them, and
    # regions claiming the same prefixes, so only the walk's order tells them apart.
    stand_ins = [
        _StandInPlan(None, re.compile("2[0-4].*")),
        _StandInPlan(re.compile("26|3"), re.compile("26[0-4].*")),
        _StandInPlan(None, re.compile("[2-5].*")),
        _StandInPlan(re.compile("2[5-7]|4"), re.compile(".*")),
        None,
        _StandInPlan(re.compile("5"), re.compile("5[01].*")),
        _StandInPlan(re.compile("31"), re.compile(".*")),  # longer than the "3" before it, which wins
    ]
    plans = cast("tuple[_Plan | None, ...]", tuple(stand_ins))
    dispatch = _RegionDispatch.of(plans)
    assert dispatch is not None
    numbers = ["".join(digits) for length in range(5) for digits in itertools.product("0123456789", repeat=length)]
    assert [dispatch.is_valid(number) for number in numbers] == [
        _is_valid_in_first_matching_region(plans, number) for number in numbers
    ]


@pytest.mark.parametrize("country_code", SHARED_COUNTRY_CODES)
def test_region_dispatch_equals_phonenumbers_walk(country_code: int) -> None:
    plans = _validation_plans(country_code)
    dispatch = _RegionDispatch.of(plans)
    if dispatch is None:  # a leading-digits pattern is not a fixed set of prefixes (44's Isle of Man)
        validator = _validator(country_code)
        assert getattr(validator, "func", None) is _is_valid_in_first_matching_region, "the walk itself is used"
        return
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[country_code]
    examples = _example_national_numbers(regions)
    heads = {"".join(digits) for digits in itertools.product("0123456789", repeat=3)}
    heads |= set(dispatch.first_plan_by_prefix)
    # Every example of every region sharing the code, its start replaced by every 3-digit string and
    # every leading-digits prefix: the numbers land in every region's table entry, valid or not.
    numbers = {head + example[len(head) :] for example in examples for head in heads} | set(examples)
    mismatches = [
        number
        for number in sorted(numbers)
        if dispatch.is_valid(number) != _is_valid_in_first_matching_region(plans, number)
    ]
    assert mismatches == []


@pytest.mark.parametrize("country_code", SHARED_COUNTRY_CODES)
def test_shared_country_code_examples_match_phonenumbers(country_code: int) -> None:
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[country_code]
    main_region = phonenumbers.region_code_for_country_code(country_code)
    answered = 0
    for region, number_type in itertools.product(regions, NUMBER_TYPES):
        example = phonenumbers.example_number_for_type(region, number_type)
        if example is None:
            continue
        for written_format in (PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL):
            raw = phonenumbers.format_number(example, written_format)
            for parse_region in sorted({region, main_region, "US"}):
                got = parse_to_e164(raw, parse_region)
                if got is not DEFER:
                    answered += 1
                    assert got == _reference(raw, parse_region), (raw, parse_region)
    assert answered > 0


@pytest.mark.parametrize("region", sorted(phonenumbers.SUPPORTED_REGIONS))
def test_validity_by_length_equals_phonenumbers(region: str) -> None:
    plan = _plan_for_region(region)
    assert plan is not None
    metadata = PhoneMetadata.metadata_for_region(region)
    rng = random.Random(region)
    numbers = set()
    for example in _example_national_numbers((region,)):
        numbers.add(example)
        for _ in range(4):  # one digit more, one less, one changed: other lengths and other types
            position = rng.randrange(len(example) + 1)
            numbers.add(example[:position] + str(rng.randrange(10)) + example[position:])
            numbers.add(example[:position] + example[position + 1 :])
            numbers.add(example[:position] + str(rng.randrange(10)) + example[position + 1 :])
    numbers = {number for number in numbers if 2 <= len(number) <= 17 and number.strip("0")}
    mismatches = [
        number
        for number in sorted(numbers)
        if plan.is_valid(number) != _library_valid_for_region(metadata.country_code, number, region)
    ]
    assert mismatches == []
