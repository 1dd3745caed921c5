"""How many examples a property test runs under the loaded Hypothesis profile (tests/conftest.py registers them)."""

from __future__ import annotations

from hypothesis import settings

#: The "ci" profile's max_examples, Hypothesis's own default: under it a test runs the count it names.
CI_MAX_EXAMPLES = 100
#: Fewer than this is hardly a property test: a count scaled down stays at least this (or the test's own, if less).
LEAST = 10


def examples(ci_count: int) -> int:
    """``ci_count`` under the "ci" profile; under another, the same share of that profile's max_examples."""
    scaled = ci_count * settings.default.max_examples // CI_MAX_EXAMPLES
    return max(min(ci_count, LEAST), scaled)
