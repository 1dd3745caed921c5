"""
A fast parser for cleanly written phone numbers, built from phonenumbers' own metadata.

It follows, step by step, what ``phonenumbers.parse`` → ``is_valid_number`` → ``format_number(E164)``
do for an input made only of ASCII digits, spaces, ``-``, ``.``, ``(``, ``)`` and one leading ``+``
(no letters, so no extension, no vanity number, no RFC 3966 parameters). For every other input, and
for every branch where phonenumbers would raise, it answers :data:`DEFER` and the caller asks
phonenumbers itself. The property tests check the equality on generated numbers in many regions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

import phonenumbers
from phonenumbers import PhoneMetadata

DEFER = object()
"""Returned when the input is outside what this parser reproduces exactly."""

_CLEAN_NUMBER = re.compile(r" *\+?[-0-9(). ]*")
_PUNCTUATION = str.maketrans("", "", " -().+")
_MAX_INPUT_LENGTH = 250  # phonenumbers refuses longer inputs
_MIN_NSN_LENGTH = 2
_MAX_NSN_LENGTH = 17
_MAX_COUNTRY_CODE_LENGTH = 3
_COUNTRY_CODES = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)

# Outcomes of phonenumbers' length test that make parse keep the national prefix.
_TOO_SHORT, _LOCAL_ONLY, _INVALID_LENGTH, _TOO_LONG, _POSSIBLE = range(5)


@dataclass(frozen=True)
class _Desc:
    """One PhoneNumberDesc: its possible lengths and its compiled national number pattern."""

    lengths: frozenset[int]
    pattern: re.Pattern[str] | None

    @classmethod
    def of(cls, desc: Any) -> _Desc | None:
        if desc is None:
            return None
        pattern = desc.national_number_pattern
        return cls(frozenset(desc.possible_length or ()), re.compile(pattern) if pattern else None)

    def as_regex(self) -> str | None:
        """Write this description as one regular expression that must match the whole number, or None if empty."""
        if self.pattern is None:
            return None
        lengths = "|".join(f".{{{length}}}" for length in sorted(self.lengths))
        length_check = f"(?=(?:{lengths})\\Z)" if lengths else ""
        return f"{length_check}(?:{self.pattern.pattern})\\Z"

    def matches_pattern(self, national_number: str) -> bool:
        return self.pattern is not None and self.pattern.fullmatch(national_number) is not None


@dataclass(frozen=True)
class _Plan:
    """Everything the parser needs from one PhoneMetadata."""

    country_code: int
    international_prefix: re.Pattern[str] | None
    national_prefix: re.Pattern[str] | None
    transform_rule: str | None
    general: _Desc
    possible_lengths: tuple[int, ...]
    local_only_lengths: frozenset[int]
    valid_number: re.Pattern[str] | None
    leading_digits: re.Pattern[str] | None

    @classmethod
    def of(cls, metadata: Any) -> _Plan:
        general = metadata.general_desc
        # The order and the mobile exclusion follow phonenumbers' number type lookup.
        type_descs = [
            metadata.premium_rate,
            metadata.toll_free,
            metadata.shared_cost,
            metadata.voip,
            metadata.personal_number,
            metadata.pager,
            metadata.uan,
            metadata.voicemail,
            metadata.fixed_line,
        ]
        if not metadata.same_mobile_and_fixed_line_pattern:
            type_descs.append(metadata.mobile)
        return cls(
            country_code=metadata.country_code,
            international_prefix=(
                re.compile(metadata.international_prefix) if metadata.international_prefix is not None else None
            ),
            national_prefix=(
                re.compile(metadata.national_prefix_for_parsing) if metadata.national_prefix_for_parsing else None
            ),
            transform_rule=metadata.national_prefix_transform_rule or None,
            general=cast(_Desc, _Desc.of(general)),  # general.possible_length below fails first if None
            possible_lengths=tuple(general.possible_length),
            local_only_lengths=frozenset(general.possible_length_local_only or ()),
            valid_number=_valid_number_regex(_Desc.of(general), [_Desc.of(desc) for desc in type_descs]),
            leading_digits=re.compile(metadata.leading_digits) if metadata.leading_digits is not None else None,
        )

    def is_valid(self, national_number: str) -> bool:
        return self.valid_number is not None and self.valid_number.match(national_number) is not None

    def length_result(self, national_number: str) -> int:
        length = len(national_number)
        if length in self.local_only_lengths:
            return _LOCAL_ONLY
        lengths = self.possible_lengths
        if lengths[0] == length:
            return _POSSIBLE
        if lengths[0] > length:
            return _TOO_SHORT
        if lengths[-1] < length:
            return _TOO_LONG
        return _POSSIBLE if length in lengths[1:] else _INVALID_LENGTH

    def strip_national_prefix(self, number: str) -> str | object:
        """Return the number without its national prefix (and carrier code), when phonenumbers would strip it."""
        if not number or self.national_prefix is None:
            return number
        match = self.national_prefix.match(number)
        if not match:
            return number
        groups = match.groups()
        if self.transform_rule is None:
            stripped = number[match.end() :]
        elif not groups:
            return DEFER  # phonenumbers fails on this metadata shape; let it decide
        elif groups[-1] is None:
            stripped = number[match.end() :]
        else:
            stripped = self.national_prefix.sub(self.transform_rule, number, count=1)
        # Keep the prefix when the number matched the general pattern with it but not without it.
        if not self.general.matches_pattern(stripped) and self.general.matches_pattern(number):
            return number
        return stripped


def _valid_number_regex(general: _Desc | None, types: list[_Desc | None]) -> re.Pattern[str] | None:
    """One regex equivalent to "matches the general description and at least one number type"."""
    general_regex = general.as_regex() if general is not None else None
    type_regexes = [regex for desc in types if desc is not None and (regex := desc.as_regex()) is not None]
    if general_regex is None or not type_regexes:
        return None
    return re.compile(f"(?={general_regex})(?:{'|'.join(type_regexes)})")


_REGION_PLANS: dict[str, _Plan | None] = {}


def _plan_for_region(region: str) -> _Plan | None:
    plan = _REGION_PLANS.get(region, DEFER)
    if plan is DEFER:
        metadata = None
        if region in phonenumbers.SUPPORTED_REGIONS:
            metadata = PhoneMetadata.metadata_for_region(region, None)
        plan = _REGION_PLANS[region] = None if metadata is None else _Plan.of(metadata)
    return cast("_Plan | None", plan)


@cache
def _plan_for_country_code(country_code: int) -> _Plan | None:
    main_region = phonenumbers.region_code_for_country_code(country_code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, main_region)
    return None if metadata is None else _Plan.of(metadata)


@cache
def _validation_plans(country_code: int) -> tuple[_Plan | None, ...]:
    """Plans of the regions sharing a country code, in phonenumbers' order (e.g. US, AG, AI, ... for 1)."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ())
    return tuple(
        (
            None
            if (metadata := PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)) is None
            else _Plan.of(metadata)
        )
        for region in regions
    )


def _is_valid(country_code: int, national_number: str) -> bool:
    plans = _validation_plans(country_code)
    if len(plans) == 1:
        return plans[0] is not None and plans[0].is_valid(national_number)
    for plan in plans:
        if plan is None:
            continue
        if plan.leading_digits is not None:
            if plan.leading_digits.match(national_number):
                return plan.is_valid(national_number)
        elif plan.is_valid(national_number):
            return True
    return False


def _split_country_code(digits: str) -> tuple[int, str] | None:
    if not digits or digits[0] == "0":
        return None
    for length in range(1, min(len(digits), _MAX_COUNTRY_CODE_LENGTH) + 1):
        country_code = int(digits[:length])
        if country_code in _COUNTRY_CODES:
            return country_code, digits[length:]
    return None


def parse_to_e164(raw: str, region: str) -> str | None | object:
    """
    E.164 (with ``+``) of a valid number, None for an invalid one, :data:`DEFER` when unsure.

    :param raw: the cell as written, unstripped.
    :param region: the default region, passed unchanged as phonenumbers would receive it.
    """
    if len(raw) > _MAX_INPUT_LENGTH or not raw.isascii() or _CLEAN_NUMBER.fullmatch(raw) is None:
        return DEFER
    region_plan = _plan_for_region(region)
    if region_plan is None:
        return DEFER
    digits = raw.translate(_PUNCTUATION)
    if len(digits) < 3:
        return DEFER

    international = "+" in raw
    if not international and region_plan.international_prefix is not None:
        match = region_plan.international_prefix.match(digits)
        # An international prefix followed by a 0 is not one (country codes never start with 0).
        if match and not digits[match.end() :].startswith("0"):
            international = True
            digits = digits[match.end() :]

    if international:
        if len(digits) <= _MIN_NSN_LENGTH:
            return DEFER
        split = _split_country_code(digits)
        if split is None:
            return DEFER
        country_code, national_number = split
        plan = _plan_for_country_code(country_code)
        if plan is None:
            return DEFER
    else:
        country_code, national_number, plan = region_plan.country_code, digits, region_plan
        code_text = str(country_code)
        if digits.startswith(code_text):
            without_code = region_plan.strip_national_prefix(digits[len(code_text) :])
            if without_code is DEFER:
                return DEFER
            without_code = cast(str, without_code)
            general = region_plan.general
            if (
                not general.matches_pattern(digits) and general.matches_pattern(without_code)
            ) or region_plan.length_result(digits) == _TOO_LONG:
                national_number = without_code
                plan = _plan_for_country_code(country_code)
                if plan is None:
                    return DEFER

    if len(national_number) < _MIN_NSN_LENGTH:
        return DEFER
    without_prefix = plan.strip_national_prefix(national_number)
    if without_prefix is DEFER:
        return DEFER
    without_prefix = cast(str, without_prefix)
    if plan.length_result(without_prefix) not in (_TOO_SHORT, _LOCAL_ONLY, _INVALID_LENGTH):
        national_number = without_prefix
    if not _MIN_NSN_LENGTH <= len(national_number) <= _MAX_NSN_LENGTH:
        return DEFER
    if not _is_valid(country_code, national_number):
        return None
    return f"+{country_code}{national_number}"
