"""Email normalization: trim and lowercase, and drop what is not an address."""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

from airflow_provider_gravity.conversions.cells import UnreadableCell, cell_text, map_distinct
from airflow_provider_gravity.conversions.pii.hashing import is_sha256_hex

# One @, a non-empty local part, a domain with a dot that neither starts nor ends it, no whitespace and no
# control character (a NUL would give another hash for the same address).
_EMAIL = re.compile(
    r"[^@\s\x00-\x1f\x7f]+@[^@\s.\x00-\x1f\x7f][^@\s\x00-\x1f\x7f]*\.[^@\s\x00-\x1f\x7f]*[^@\s.\x00-\x1f\x7f]"
)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_format_characters(text: str) -> str:
    """
    ``text`` without its format characters (Unicode category Cf), looked up one character at a time: a
    table of every Cf code point takes 0.7 s to build, more than a night's non-ASCII emails take this way."""
    return "".join([char for char in text if char.isascii() or unicodedata.category(char) != "Cf"])


def normalize_email_text(text: str) -> str | None:
    """
    Normalize one stripped, non-empty email; None when it is not an address.

    Invisible format characters (zero-width space and joiners, byte-order mark, soft hyphen, direction
    marks) are removed first: pasted from documents, they would give another hash for the same address.
    """
    if is_sha256_hex(text):
        return text.lower()
    if not text.isascii():
        # Format characters go; a lone surrogate (from a hand-built or \ud800-escaped JSON cell) is no address.
        text = _without_format_characters(text).strip()
        if _SURROGATE.search(text):
            return None
    email = text.lower()
    return email if _EMAIL.fullmatch(email) else None


def _normalize_email_cell(value: object) -> str | None:
    try:
        text = cell_text(value)
    except UnreadableCell:
        return None
    return None if text is None else normalize_email_text(text)


def normalize_email(values: pd.Series) -> pd.Series:
    """
    Trim and lowercase emails.

    A value is kept when it has exactly one ``@``, a non-empty local part, a dot inside the domain
    (not first or last) and no whitespace inside. A 64-hex-character value is taken as already
    hashed and only lowercased.

    :param values: raw emails.
    :return: ``string`` Series, NA where the email is missing or invalid.
    """
    return map_distinct(values, _normalize_email_cell)
