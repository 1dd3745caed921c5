"""First and last name normalization: letters only, lowercase, NFC."""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

from airflow_provider_gravity.conversions.cells import UnreadableCell, cell_text, map_distinct
from airflow_provider_gravity.conversions.pii.hashing import is_sha256_hex

_NOT_ASCII_LETTER = re.compile(r"[^a-z]+")


def normalize_name_text(text: str) -> str | None:
    """Normalize one stripped, non-empty name; None when no letter is left."""
    if is_sha256_hex(text):
        return text.lower()
    if text.isascii():
        name = _NOT_ASCII_LETTER.sub("", text.lower())
    else:
        lowered = unicodedata.normalize("NFC", text).lower()
        kept = "".join(character for character in lowered if unicodedata.category(character)[0] in "LM")
        # Removing characters can bring a letter and a combining mark together: compose them again.
        name = unicodedata.normalize("NFC", kept)
    return name or None


def _normalize_name_cell(value: object) -> str | None:
    try:
        text = cell_text(value)
    except UnreadableCell:
        return None
    return None if text is None else normalize_name_text(text)


def normalize_name(values: pd.Series) -> pd.Series:
    """
    Normalize first or last names: NFC, lowercase, keep only Unicode letters and combining marks.

    Punctuation, spaces and digits are removed (``"Mary-Jane "`` gives ``"maryjane"``). A
    64-hex-character value is taken as already hashed and only lowercased.

    :param values: raw names.
    :return: ``string`` Series, NA where the name is missing or no letter is left.
    """
    return map_distinct(values, _normalize_name_cell)
