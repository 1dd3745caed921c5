"""A text column read by Arrow kernels gives each cell's text exactly as the per-cell rule does."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_gravity.conversions.cells import cell_text
from airflow_provider_gravity.conversions.events.fields import text_column
from tests.support.examples import examples

# Every character str.strip() removes, and neighbours of the ASCII range the fast path trusts.
EDGES = "".join(chr(c) for c in range(0x110000) if chr(c).isspace()) + "\x00\x1b\x20\x21\x7e\x7f\x80é\u200bΣ"
cells = st.one_of(st.none(), st.text(alphabet=st.sampled_from(EDGES) | st.characters(codec="utf-8"), max_size=8))


def per_cell(values: list[str | None]) -> list[str | None]:
    return [cell_text(value) for value in values]


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(cells, max_size=30))
def test_arrow_backed_text_is_trimmed_as_each_cell_is(values: list[str | None]):
    series = pd.Series(values, dtype=pd.StringDtype("pyarrow"))
    texts, unreadable = text_column(series)
    assert texts == per_cell(values)
    assert unreadable == [False] * len(values)


@pytest.mark.parametrize(
    "value", [" padded ", "\u3000ideographic space\u3000", "tab\t", "\x1funit separator", "", " ", "plain"]
)
def test_whitespace_python_strips_is_stripped_in_an_arrow_column(value: str):
    texts, _ = text_column(pd.Series([value, "x"], dtype=pd.StringDtype("pyarrow")))
    assert texts == [value.strip() or None, "x"]
