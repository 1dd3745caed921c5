"""
The match keys a run counts: the one declaration that the event builder, the tally, the run history, the
operator and the view derive from.

A match key is present in an event when every ``user_data`` field behind it is; each event's coverage is an
integer whose bit ``i`` stands for the ``i``-th key of :data:`MATCH_KEYS`.
"""

from __future__ import annotations

from types import MappingProxyType

#: Each match key, in bit order, with the ``user_data`` fields it needs.
MATCH_KEYS = MappingProxyType(
    {
        "em": ("em",),
        "ph": ("ph",),
        "fn_ln": ("fn", "ln"),
        "external_id": ("external_id",),
        "click_id": ("click_id",),
    }
)
#: The bit of each match key in an event's coverage.
MATCH_KEY_BITS = MappingProxyType({key: 1 << bit for bit, key in enumerate(MATCH_KEYS)})
