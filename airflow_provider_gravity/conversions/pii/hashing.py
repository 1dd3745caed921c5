"""SHA-256 of normalized values, with already hashed values passed through."""

from __future__ import annotations

import hashlib
import re

import pandas as pd

from airflow_provider_gravity.conversions.cells import UnreadableCell, cell_text, map_distinct

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


def is_sha256_hex(text: str) -> bool:
    """Return True when ``text`` is already a SHA-256 digest: 64 hexadecimal characters, any case."""
    return len(text) == 64 and _SHA256_HEX.fullmatch(text) is not None


def hash_text(text: str) -> str:
    """Lowercase hex SHA-256 of ``text`` encoded as UTF-8; a value that is already a digest is lowercased."""
    if is_sha256_hex(text):
        return text.lower()
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _hash_cell(value: object) -> str | None:
    try:
        text = cell_text(value)
    except UnreadableCell:
        return None
    return None if text is None else hash_text(text)


def sha256_hex(values: pd.Series) -> pd.Series:
    """
    Hash each value of a Series (expected to be normalized already).

    :param values: normalized values; missing ones (None, NaN, NA, blank) stay NA.
    :return: ``string`` Series of lowercase hex digests, one per row.
    """
    return map_distinct(values, _hash_cell)
