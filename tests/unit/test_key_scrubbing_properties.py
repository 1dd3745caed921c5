"""
Property-based tests of the API-key scrubber (``KeyScrubber``): whatever text a server wraps the key in, and in
whichever form the README names, none of the key's forms (``tests/support/key_forms.py``, computed without the
provider's code) is left in the text kept.
"""

from __future__ import annotations

import base64
import json
import os
import string
import time
from urllib.parse import quote, quote_plus

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airflow_provider_gravity.conversions.api.secrets import KeyScrubber
from tests.support.examples import examples
from tests.support.key_forms import ESCAPES, base64_cores, key_leaks

PROPERTY_SETTINGS = settings(
    max_examples=examples(400),
    deadline=None,
    derandomize=os.environ.get("CI") == "true",
    suppress_health_check=[HealthCheck.too_slow],
)
# What the client accepts as a key: printable ASCII without whitespace.
KEY_ALPHABET = "".join(c for c in string.printable if not c.isspace())
KEYS = st.text(KEY_ALPHABET, min_size=8, max_size=64)
# Text around the key: any characters, short enough that the key starts within the 300 characters kept.
AROUND = st.text(max_size=100)
KEY_ISSUE_17 = "sk_Live-Hostile+Key/42=x"


@st.composite
def bare_forms(draw, key: str) -> tuple[str, str]:
    """One form of the key before any escaping: as is in any letter case, a stretch, hex, or base64 at any offset."""
    kind = draw(st.sampled_from(["key", "letter-case", "stretch", "hex", "base64", "url-safe-base64"]))
    if kind == "key":
        return kind, key
    if kind == "letter-case":
        flips = draw(st.lists(st.booleans(), min_size=len(key), max_size=len(key)))
        return kind, "".join(c.swapcase() if flip else c for c, flip in zip(key, flips, strict=True))
    if kind == "stretch":
        start = draw(st.integers(0, len(key) - 8))
        return kind, key[start : draw(st.integers(start + 8, len(key)))]
    if kind == "hex":
        hexed = key.encode().hex()
        return kind, draw(st.sampled_from([hexed, hexed.upper()]))
    # base64 of the key inside other bytes: any number of them before it (so any of the 3 alignments) and after.
    before, after = draw(st.binary(max_size=20)), draw(st.binary(max_size=20))
    encode = base64.b64encode if kind == "base64" else base64.urlsafe_b64encode
    encoded = encode(before + key.encode() + after).decode()
    if draw(st.booleans()):
        encoded = encoded.rstrip("=")
    return f"{kind}-offset-{len(before) % 3}", encoded


@st.composite
def texts_holding_a_key(draw) -> tuple[str, str, str]:
    """``(key, text, how)``: random text with the key in one form, then URL-encoded, JSON-escaped or neither."""
    key = draw(KEYS)
    kind, form = draw(bare_forms(key))
    escape = draw(st.sampled_from(sorted(ESCAPES)))
    return key, draw(AROUND) + ESCAPES[escape](form) + draw(AROUND), f"{kind} {escape}"


@PROPERTY_SETTINGS
@given(case=texts_holding_a_key())
@example(case=(KEY_ISSUE_17, "bad token " + base64.b64encode(f"t={KEY_ISSUE_17}".encode()).decode(), "issue 17"))
@example(case=(KEY_ISSUE_17, base64.urlsafe_b64encode(f"t={KEY_ISSUE_17}".encode()).decode().rstrip("="), "b64url"))
@example(case=(KEY_ISSUE_17, "k=" + quote(base64.b64encode(f"x:{KEY_ISSUE_17}".encode()).decode(), safe=""), "q"))
def test_no_form_of_the_key_is_left_wherever_it_sits_in_a_text(case):
    key, text, how = case
    scrub = KeyScrubber(key)

    scrubbed = scrub(text)

    assert not key_leaks(scrubbed, key), (how, text, scrubbed)
    assert "***" in scrubbed, (how, text, scrubbed)
    assert len(scrubbed) <= 300


@settings(PROPERTY_SETTINGS, max_examples=examples(150))  # each example compiles the full pattern: 30 ms
@given(key=KEYS, pieces=st.lists(st.sampled_from(["key", "b64", "hex", "junk"]), min_size=1, max_size=40))
def test_a_text_made_of_many_forms_of_the_key_leaves_none_in_the_part_kept(key, pieces):
    """What is kept is the first 300 characters of the text scrubbed whole, not a cut scrubbed afterwards."""
    forms = {
        "key": key,
        "b64": base64.b64encode(b"t=" + key.encode()).decode(),
        "hex": key.encode().hex(),
        "junk": "x" * 7,
    }
    text = "".join(forms[piece] for piece in pieces)

    scrubbed = KeyScrubber(key)(text)

    assert not key_leaks(scrubbed, key), (text, scrubbed)


def test_the_oracle_finds_each_alignment_of_base64():
    """The independent forms of tests/support/key_forms.py hold the issue-17 leak: base64("t=" + KEY)."""
    leaked = base64.b64encode(f"t={KEY_ISSUE_17}".encode()).decode()
    cores = base64_cores(KEY_ISSUE_17)

    assert cores["base64-offset-2"] in leaked
    assert {name.split()[0] for name in key_leaks(leaked, KEY_ISSUE_17)} == {
        "base64-offset-2",
        "url-safe-base64-offset-2",
    }
    for before in (b"", b"x", b"xy"):
        assert key_leaks(base64.b64encode(before + KEY_ISSUE_17.encode() + b"!").decode(), KEY_ISSUE_17)
    assert key_leaks(quote_plus(json.dumps(KEY_ISSUE_17)), KEY_ISSUE_17)


def test_a_16_mib_text_full_of_the_key_is_scrubbed_quickly_and_fully():
    """Only the head of a text can reach the 300 characters kept: a huge error answer costs no seconds."""
    key = "sk_live_A1b2C3d4E5f6G7h8J9k0L1m2N3p4"
    scrub = KeyScrubber(key)
    text = ("sk_live_ " + base64.b64encode(b"t=" + key.encode()).decode() + " ") * ((16 << 20) // 60)

    started = time.perf_counter()
    scrubbed = scrub(text)
    elapsed = time.perf_counter() - started

    assert not key_leaks(scrubbed, key)
    assert len(scrubbed) == 300
    assert elapsed < 0.5, f"{elapsed:.2f} s to scrub {len(text):,} characters"
