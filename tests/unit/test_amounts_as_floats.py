"""NUMERIC amounts read as floats by Arrow are the floats of their Decimals, and only plain amounts are read so."""

from __future__ import annotations

import decimal

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_gravity.conversions.read.arrow import _amounts

_digits = st.text(alphabet="0123456789", min_size=1, max_size=15)
_fractions = st.one_of(st.just(""), st.text(alphabet="0123456789", min_size=1, max_size=60).map(lambda d: "." + d))
_plain_amounts = st.builds(
    lambda sign, whole, fraction: sign + whole + fraction, st.sampled_from(["", "-"]), _digits, _fractions
)


@settings(max_examples=2_000, deadline=None)
@given(texts=st.lists(_plain_amounts, min_size=1, max_size=50))
def test_each_plain_amount_is_the_float_of_its_decimal(texts: list[str]) -> None:
    floats = _amounts("value", pa.chunked_array([pa.array(texts)]))
    assert floats is not None
    expected = [float(decimal.Decimal(text)) for text in texts]
    assert [repr(number) for number in floats.to_pylist()] == [repr(number) for number in expected]


@pytest.mark.parametrize(
    "texts",
    [
        ["1.5", "NaN"],
        ["Infinity"],
        ["-Infinity"],
        ["1234567890123456"],  # 16 digits: 2**53 and beyond are sent as the Decimal's integer
        ["1.5", None],
        ["1e5"],
        [".5"],
    ],
)
def test_anything_else_keeps_its_decimals(texts: list[str | None]) -> None:
    assert _amounts("value", pa.chunked_array([pa.array(texts, pa.string())])) is None


def test_only_the_value_column_is_read_as_floats() -> None:
    texts = pa.chunked_array([pa.array(["19.90"])])
    assert _amounts("custom_total", texts) is None
    assert _amounts(" VALUE ", texts) is not None
