"""Phone normalization to E.164, exactly as phonenumbers does it, once per distinct (number, region)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import cast

import numpy as np
import pandas as pd

from airflow_provider_gravity.conversions.cells import UnreadableCell, cell_text, factorize_cells, is_missing
from airflow_provider_gravity.conversions.pii.hashing import is_sha256_hex
from airflow_provider_gravity.conversions.pii.phone_metadata_path import DEFER, parse_to_e164

BACKENDS = ("phonenumbers", "rphonenumbers")

log = logging.getLogger(__name__)


@cache
def _load_backend(backend: str) -> ModuleType:
    if backend not in BACKENDS:
        raise ValueError(f"Unknown phone backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    try:
        library = importlib.import_module(backend)
    except ImportError as error:
        raise ImportError(
            f"The {backend!r} phone backend is not installed: pip install 'airflow-provider-gravity[fast-phones]'."
        ) from error
    reference = importlib.import_module("phonenumbers").__version__
    built_for = getattr(library, "__phonenumbers_version__", reference)
    if built_for != reference:
        log.warning(
            "Phone backend %s carries phonenumbers %s metadata but phonenumbers %s is installed: "
            "a few regions may normalize differently.",
            backend,
            built_for,
            reference,
        )
    return library


def _library_parser(library: ModuleType) -> Callable[[str, str | None], str | None]:
    e164 = library.PhoneNumberFormat.E164

    def parse(raw: str, region: str | None) -> str | None:
        try:
            number = library.parse(raw, region)
        except Exception:  # any refusal of the library means "not a phone number"
            return None
        if not library.is_valid_number(number):
            return None
        return cast(str, library.format_number(number, e164))

    return parse


def phone_text(value: object) -> str | None:
    """
    Return the text phonenumbers is given for one cell (None when the cell is missing).

    Strings are passed unchanged (phonenumbers ignores surrounding spaces itself); other cells are read
    as text by :func:`~.cells.cell_text`, so numbers from numeric columns have no decimal part.

    :raises UnreadableCell: for a cell that is not text, a number or UTF-8 bytes.
    """
    if isinstance(value, str):
        return value
    return cell_text(value)


class PhoneNormalizer:
    """
    Turns (raw number, region) pairs into E.164 strings.

    With the ``phonenumbers`` backend, clean numbers go through a parser built from phonenumbers'
    metadata (:mod:`.phone_metadata_path`) and everything else through phonenumbers itself. With
    ``rphonenumbers`` (optional, a Rust port), every number goes through that library.

    :param backend: ``"phonenumbers"`` (default, the reference) or ``"rphonenumbers"``.
    """

    def __init__(self, backend: str = "phonenumbers") -> None:
        self.backend = backend
        self._library_parse = _library_parser(_load_backend(backend))
        self._use_metadata_path = backend == "phonenumbers"

    def normalize_text(self, text: str, region: str | None) -> str | None:
        """E.164 of one non-missing number; a 64-hex-character value is returned lowercased."""
        if len(text) >= 64 and is_sha256_hex(text.strip()):
            return text.strip().lower()
        if self._use_metadata_path and region is not None:
            result = parse_to_e164(text, region)
            if result is not DEFER:
                return cast("str | None", result)
        return self._library_parse(text, region)


def _region_codes(
    region: str | pd.Series | None, default_region: str | None, length: int
) -> tuple[np.ndarray, list[str | None]]:
    """Each row's region as codes into a list of distinct regions (missing ones replaced by the default)."""
    if isinstance(region, pd.Series):
        if len(region) != length:
            raise ValueError("The region Series must have one value per phone number.")
        codes, uniques = factorize_cells(region)
        regions = [None if is_missing(value) else str(value) for value in uniques]
        regions.append(default_region)
        return np.where(codes < 0, len(regions) - 1, codes), regions
    chosen = default_region if region is None or is_missing(region) else region
    return np.zeros(length, dtype=np.int64), [chosen]


def normalize_phone(
    values: pd.Series,
    region: str | pd.Series | None,
    *,
    default_region: str | None = None,
    backend: str = "phonenumbers",
) -> pd.Series:
    """
    Normalize phone numbers to E.164 (with ``+``).

    The result equals ``phonenumbers.parse(raw, region)`` → ``is_valid_number`` →
    ``format_number(E164)`` for every input; NA where parsing raises or the number is not valid.
    A 64-hex-character value is taken as already hashed and only lowercased.

    :param values: raw phone numbers (strings or integers).
    :param region: the default region for every row (``"US"``), or a Series aligned with ``values``
        holding each row's region (ISO 3166 alpha-2), passed to phonenumbers unchanged.
    :param default_region: region used where ``region`` is missing.
    :param backend: ``"phonenumbers"`` (default) or ``"rphonenumbers"`` (optional extra).
    :return: ``string`` Series, NA where the number is missing or invalid.
    """
    normalizer = PhoneNormalizer(backend)
    value_codes, value_uniques = factorize_cells(values)
    region_codes, regions = _region_codes(region, default_region, len(values))
    pair_codes = value_codes.astype(np.int64) * len(regions) + region_codes
    pair_codes[value_codes < 0] = -1
    codes, pair_uniques = pd.factorize(pair_codes, use_na_sentinel=True)
    pairs: list[tuple[str, str | None] | None] = []
    for pair in pair_uniques:
        if pair < 0:  # the rows whose number is missing
            pairs.append(None)
            continue
        try:
            text = phone_text(value_uniques[pair // len(regions)])
        except UnreadableCell:
            text = None
        pairs.append(None if text is None else (text, regions[pair % len(regions)]))
    mapped = np.empty(len(pairs) + 1, dtype=object)
    mapped[: len(pairs)] = [None if pair is None else normalizer.normalize_text(*pair) for pair in pairs]
    mapped[len(pairs)] = None
    return pd.Series(mapped[codes], index=values.index, dtype="string")
