"""
The forms in which an API key can be written into a text, and a check that a text holds none of them.

Computed here without the provider's code, so that the tests of its scrubber check it against an independent
reading of what "the key, URL-, base64- or JSON-escaped" means:

- the key itself, and each of its 8-character stretches (a server may echo part of it);
- its bytes in hex;
- its base64 and url-safe base64 wherever it starts in the bytes encoded: base64 writes 3 bytes as 4
  characters, so a key after 0, 1 or 2 bytes of other text (``base64("t=" + key)``) is written differently
  each time. What is found here, for each of the three alignments, is the run of characters that encode the
  key's bits alone: the characters that come out the same whatever bytes surround the key, found by encoding
  it between zero bytes and again between 0xFF bytes (a character that holds any bit of the surroundings
  differs between the two);
- each of these URL-encoded (``quote`` with and without ``/`` kept, ``quote_plus``) and JSON-escaped
  (``json.dumps``, with ``/`` escaped as ``\\/``, and every character as ``\\uXXXX``).

Letter case is ignored when looking for a form (a server may change it; that only makes the check stricter),
and each form is also escaped in lower and in upper case.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from urllib.parse import quote, quote_plus

STRETCH = 8
_URL_SAFE = str.maketrans("+/", "-_")
# The letter case of a form before it is escaped (the check ignores case, but not in "\\u0041" against "\\u0061").
_CASES: dict[str, Callable[[str], str]] = {"": str, " lower-case": str.lower, " upper-case": str.upper}

#: How a form may be escaped inside a text.
ESCAPES: dict[str, Callable[[str], str]] = {
    "as-is": lambda text: text,
    "url-encoded": lambda text: quote(text, safe=""),
    "url-encoded-keeping-slash": quote,
    "form-encoded": quote_plus,
    "json-escaped": lambda text: json.dumps(text)[1:-1],
    "json-escaped-slash": lambda text: json.dumps(text)[1:-1].replace("/", "\\/"),
    "json-unicode-escaped": lambda text: "".join(f"\\u{ord(c):04x}" for c in text),
}


def base64_cores(key: str) -> dict[str, str]:
    """For each alignment (0, 1, 2) and alphabet: the base64 characters that encode the key's bits alone."""
    raw = key.encode()
    cores = {}
    for offset in range(3):
        low = base64.b64encode(b"\x00" * offset + raw + b"\x00" * 3).decode()
        high = base64.b64encode(b"\xff" * offset + raw + b"\xff" * 3).decode()
        same = "".join(a if a == b else "\n" for a, b in zip(low, high, strict=True))
        core = max(same.split("\n"), key=len)
        cores[f"base64-offset-{offset}"] = core
        cores[f"url-safe-base64-offset-{offset}"] = core.translate(_URL_SAFE)
    return cores


def key_forms(key: str) -> dict[str, str]:
    """Every form of ``key`` a scrubbed text must not hold, by name."""
    bare = {"key": key, "hex": key.encode().hex(), **base64_cores(key)}
    stretch = min(STRETCH, len(key))
    bare.update({f"stretch-{i}": key[i : i + stretch] for i in range(len(key) - stretch + 1)})
    return {
        f"{name}{case} {escape}": encode(spell(form))
        for name, form in bare.items()
        for case, spell in _CASES.items()
        for escape, encode in ESCAPES.items()
    }


def key_leaks(text: str, key: str) -> list[str]:
    """The names of the forms of ``key`` found in ``text``, in any letter case."""
    lowered = text.lower()
    return sorted(name for name, form in key_forms(key).items() if form.lower() in lowered)
