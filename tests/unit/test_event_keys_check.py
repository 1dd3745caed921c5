"""The whole-column check of event ids and names against its row-by-row definition, on hostile keys."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_gravity.conversions.events.build import _keys_fine
from airflow_provider_gravity.conversions.read.columns import MAX_KEY_LENGTH

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Printable ASCII, the control characters, and non-ASCII that Python's isprintable refuses or accepts.
_CHARACTERS = st.sampled_from(["a", "Z", "9", "-", " ", "\x00", "\n", "\x1f", "\x7f", "\x85", "\u2028", "é", "\u00a0"])
_KEYS = st.one_of(st.none(), st.text(_CHARACTERS, max_size=8), st.just("x" * MAX_KEY_LENGTH))


def _fine_one_by_one(texts: list[str | None]) -> bool:
    return all(text is not None and len(text) <= MAX_KEY_LENGTH and not _CONTROL.search(text) for text in texts)


@given(st.lists(_KEYS, max_size=12), st.booleans())
def test_the_column_check_agrees_with_the_check_of_each_key(keys, one_key_repeated):
    texts = keys[:1] * 5 if one_key_repeated else keys
    assert _keys_fine(texts) is _fine_one_by_one(texts)


def test_a_key_one_character_too_long_or_with_a_control_character_after_non_ascii_is_not_fine():
    assert _keys_fine(["é" * MAX_KEY_LENGTH, "ok"])
    assert not _keys_fine(["ok", "x" * (MAX_KEY_LENGTH + 1)])
    assert not _keys_fine(["é", "order\x7f"])  # not ASCII: the regex decides
    assert not _keys_fine(["Purchase"] * 3 + [None])
    assert _keys_fine(["Purchase"] * 1000) and _keys_fine([])
