"""
Canonical JSON text, the one encoding of every value sent: keys sorted, no spaces, ASCII with ``\\u`` escapes.

It is the text ``json.dumps(value, sort_keys=True, separators=(",", ":"))`` gives, with lone surrogates and
NaN refused; what is sent is also what the delivery log hashes. It imports no stage of the pipeline.
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring_ascii
from typing import Any


def canonical_json(value: Any) -> str:
    """
    ``value`` as canonical JSON text (sorted keys, compact, ASCII).

    :raises ValueError: for text that is not valid Unicode (a lone surrogate) or a number JSON cannot hold.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    if "\\ud" in text:  # a surrogate escape: fine in a pair, refused alone (Gravity reads UTF-8)
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return text


def json_string(text: str) -> str:
    """
    One string as a JSON string literal; :func:`canonical_json` for text, faster.

    :raises ValueError: for a lone surrogate.
    """
    if not text.isascii():
        text.encode("utf-8")  # UnicodeEncodeError (a ValueError) for a lone surrogate
    return encode_basestring_ascii(text)


def json_value(value: Any) -> str:
    """
    Any JSON value as canonical JSON text: text, whole numbers and lists of text (the hashed match keys,
    nearly every value of a chunk) without :func:`json.dumps`, anything else through :func:`canonical_json`.

    :raises ValueError: as :func:`canonical_json`.
    """
    kind = type(value)
    if kind is str:
        return json_string(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    if kind is list and all(type(item) is str for item in value):
        return "[" + ",".join([json_string(item) for item in value]) + "]"
    return canonical_json(value)
