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
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, cast

import phonenumbers
from phonenumbers import PhoneMetadata

DEFER = object()
"""Returned when the input is outside what this parser reproduces exactly."""

_SEPARATORS = b" -()."  # with digits and one leading "+" (after spaces), all a clean number may contain
_MAX_INPUT_LENGTH = 250  # phonenumbers refuses longer inputs
_MIN_NSN_LENGTH = 2
_MAX_NSN_LENGTH = 17
_MAX_COUNTRY_CODE_LENGTH = 3
# Keyed by the code as written: the digits never start with 0, so the text of a prefix is the text of its int.
_COUNTRY_CODE_BY_TEXT = {str(code): code for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE}
# A leading-digits pattern made only of alternatives of digits and digit classes, such as "8001|8[024]9".
_FIXED_PREFIX_ALTERNATIVE = re.compile(r"(?:[0-9]|\[[-0-9]+\])+")
_PREFIX_TOKEN = re.compile(r"[0-9]|\[[-0-9]+\]")

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

    def allows_length(self, length: int) -> bool:
        """Whether the possible lengths admit this one (phonenumbers admits every length when none are listed)."""
        return not self.lengths or length in self.lengths

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
    valid_number_by_length: dict[int, re.Pattern[str]]
    leading_digits: re.Pattern[str] | None

    @classmethod
    def of(cls, metadata: Any) -> _Plan:
        general = metadata.general_desc
        # The mobile exclusion follows phonenumbers' number type lookup. Its order does not matter to
        # validity (any type will do), so mobile and fixed line, the commonest, are tried first.
        type_descs = [] if metadata.same_mobile_and_fixed_line_pattern else [metadata.mobile]
        type_descs += [
            metadata.fixed_line,
            metadata.premium_rate,
            metadata.toll_free,
            metadata.shared_cost,
            metadata.voip,
            metadata.personal_number,
            metadata.pager,
            metadata.uan,
            metadata.voicemail,
        ]
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
            valid_number_by_length=_valid_number_patterns(_Desc.of(general), [_Desc.of(desc) for desc in type_descs]),
            leading_digits=re.compile(metadata.leading_digits) if metadata.leading_digits is not None else None,
        )

    def is_valid(self, national_number: str) -> bool:
        """Tell whether the number is valid in this region (for numbers of at most :data:`_MAX_NSN_LENGTH` digits)."""
        pattern = self.valid_number_by_length.get(len(national_number))
        return pattern is not None and pattern.match(national_number) is not None

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


def _valid_number_patterns(general: _Desc | None, types: list[_Desc | None]) -> dict[int, re.Pattern[str]]:
    """
    Write, for each length a valid number may have, one regex equivalent to "matches the general
    description and at least one number type" for numbers of that length.

    Splitting by length leaves out the types of other lengths and the length checks, which made one
    regex for all lengths about 1.7 times as slow. Lengths beyond :data:`_MAX_NSN_LENGTH`, which
    parse_to_e164 never validates, are left out when a description lists no lengths.
    """
    if general is None or general.pattern is None:
        return {}
    patterns = {}
    for length in sorted(general.lengths) or range(_MAX_NSN_LENGTH + 1):
        alternatives = [
            f"(?:{desc.pattern.pattern})\\Z"
            for desc in types
            if desc is not None and desc.pattern is not None and desc.allows_length(length)
        ]
        if alternatives:
            patterns[length] = re.compile(f"(?=(?:{general.pattern.pattern})\\Z)(?:{'|'.join(alternatives)})")
    return patterns


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


def _fixed_prefixes(leading_digits: str) -> frozenset[str] | None:
    """
    Expand a leading-digits pattern into the digit strings it matches at the start of a number, or None if unsure.

    Only patterns made of ``|``-separated runs of digits and digit classes (``[024]``, ``[2-9]``) are
    expanded: without groups, quantifiers or anchors, ``match`` succeeds exactly when the number starts
    with one of these strings. Each class is expanded by the regex engine itself, one digit at a time.
    """
    prefixes: set[str] = set()
    for alternative in leading_digits.split("|"):
        if _FIXED_PREFIX_ALTERNATIVE.fullmatch(alternative) is None:
            return None
        expansions = [""]
        for token in _PREFIX_TOKEN.findall(alternative):
            token_digits = [digit for digit in "0123456789" if re.fullmatch(token, digit)]
            expansions = [expansion + digit for expansion in expansions for digit in token_digits]
        prefixes.update(expansions)
    return frozenset(prefixes)


@dataclass(frozen=True)
class _RegionDispatch:
    """
    phonenumbers' choice of region among those sharing a country code, as prefix tables.

    phonenumbers walks the regions in order: one with leading digits is chosen when the number starts
    with them; one without is chosen when the number is valid there. So the number is valid exactly
    when it is valid in a region without leading digits that comes before the first region whose leading
    digits it starts with, or valid in that region.
    """

    plans: tuple[_Plan, ...]
    first_plan_by_prefix: dict[str, int]
    prefix_lengths: tuple[int, ...]
    unconditional_plans: tuple[int, ...]
    """Indices, ascending, of the plans without leading digits."""

    @classmethod
    def of(cls, plans: tuple[_Plan | None, ...]) -> _RegionDispatch | None:
        """Build the tables for these plans, or None when a leading-digits pattern is not a fixed set of prefixes."""
        present = tuple(plan for plan in plans if plan is not None)  # phonenumbers skips a region without metadata
        first_plan_by_prefix: dict[str, int] = {}
        for index, plan in enumerate(present):
            if plan.leading_digits is None:
                continue
            prefixes = _fixed_prefixes(plan.leading_digits.pattern)
            if prefixes is None:
                return None
            for prefix in prefixes:
                first_plan_by_prefix.setdefault(prefix, index)
        return cls(
            plans=present,
            first_plan_by_prefix=first_plan_by_prefix,
            prefix_lengths=tuple(sorted({len(prefix) for prefix in first_plan_by_prefix})),
            unconditional_plans=tuple(index for index, plan in enumerate(present) if plan.leading_digits is None),
        )

    def is_valid(self, national_number: str) -> bool:
        first_by_prefix = len(self.plans)
        for length in self.prefix_lengths:
            index = self.first_plan_by_prefix.get(national_number[:length])
            if index is not None and index < first_by_prefix:
                first_by_prefix = index
        for index in self.unconditional_plans:
            if index > first_by_prefix:
                break
            if self.plans[index].is_valid(national_number):
                return True
        return first_by_prefix < len(self.plans) and self.plans[first_by_prefix].is_valid(national_number)


def _is_valid_in_first_matching_region(plans: tuple[_Plan | None, ...], national_number: str) -> bool:
    """phonenumbers' own walk over the regions sharing a country code (see :class:`_RegionDispatch`)."""
    for plan in plans:
        if plan is None:
            continue
        if plan.leading_digits is not None:
            if plan.leading_digits.match(national_number):
                return plan.is_valid(national_number)
        elif plan.is_valid(national_number):
            return True
    return False


@cache
def _validator(country_code: int) -> Callable[[str], bool]:
    """Return the test phonenumbers applies to a national number of this country code for validity."""
    plans = _validation_plans(country_code)
    if len(plans) == 1:
        only = plans[0]
        return (lambda _: False) if only is None else only.is_valid
    dispatch = _RegionDispatch.of(plans)
    if dispatch is not None:
        return dispatch.is_valid
    return partial(_is_valid_in_first_matching_region, plans)


def _split_country_code(digits: str) -> tuple[int, str] | None:
    if digits[0] == "0":
        return None
    for length in range(1, _MAX_COUNTRY_CODE_LENGTH + 1):
        country_code = _COUNTRY_CODE_BY_TEXT.get(digits[:length])
        if country_code is not None:
            return country_code, digits[length:]
    return None


def parse_to_e164(raw: str, region: str) -> str | None | object:
    """
    E.164 (with ``+``) of a valid number, None for an invalid one, :data:`DEFER` when unsure.

    :param raw: the cell as written, unstripped.
    :param region: the default region, passed unchanged as phonenumbers would receive it.
    """
    if len(raw) > _MAX_INPUT_LENGTH or not raw.isascii():
        return DEFER
    # Bytes, because bytes.translate deletes characters several times faster than str.translate.
    written = raw.encode().lstrip(b" ")
    international = written.startswith(b"+")
    digit_bytes = (written[1:] if international else written).translate(None, _SEPARATORS)
    if len(digit_bytes) < 3 or not digit_bytes.isdigit():  # bytes.isdigit accepts only ASCII digits
        return DEFER
    region_plan = _REGION_PLANS[region] if region in _REGION_PLANS else _plan_for_region(region)
    if region_plan is None:
        return DEFER
    digits = digit_bytes.decode()

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
    if not _validator(country_code)(national_number):
        return None
    return f"+{country_code}{national_number}"
