"""Each row's JSON object is joined from its fields' fragments in one pass: every row, in place, present or not."""

from __future__ import annotations

import json

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_gravity.conversions.events.encode import (
    Fragments,
    joined_objects,
    text_fragments,
    value_fragments,
)

KEYS = ("a", "bb", "event_id", "z")


def _column(key: str, values: list[object | None]) -> Fragments:
    texts = [
        None if value is None else f"{json.dumps(key)}:{json.dumps(value, sort_keys=True, separators=(',', ':'))}"
        for value in values
    ]
    return Fragments(pa.array(texts, pa.string()), [])


def _expected(rows: list[dict[str, object]]) -> list[str | None]:
    return [json.dumps(row, sort_keys=True, separators=(",", ":")) if row else None for row in rows]


def test_rows_with_no_field_stay_null_and_keep_every_later_row_in_place():
    columns = {
        "a": [1, None, None, None, "x"],
        "bb": [None, None, {"k": [1, 2]}, None, None],
        "z": [None, None, None, None, 'q"\\'],
    }
    objects = joined_objects([_column(key, values) for key, values in columns.items()], 5)
    rows = [{key: values[row] for key, values in columns.items() if values[row] is not None} for row in range(5)]
    assert objects.to_pylist() == _expected(rows)
    assert objects.to_pylist()[1] is None and objects.to_pylist()[3] is None


@settings(deadline=None)  # the first example builds Arrow's kernels: slow on a loaded machine
@given(
    st.lists(
        st.fixed_dictionaries({}, optional={key: st.one_of(st.integers(), st.text(max_size=5)) for key in KEYS}),
        min_size=1,
        max_size=30,
    )
)
def test_objects_equal_json_dumps_of_each_row(rows: list[dict[str, object]]):
    columns = [_column(key, [row.get(key) for row in rows]) for key in KEYS]
    assert joined_objects(columns, len(rows)).to_pylist() == _expected(rows)


@settings(deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.text(max_size=6)),
            st.one_of(st.none(), st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
            st.one_of(st.none(), st.text(alphabet='ab"\\é\n', max_size=4)),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_fields_written_by_arrow_keep_their_key_and_quotes_apart_and_join_as_json_dumps_writes(rows):
    ids, amounts, names = (list(column) for column in zip(*rows, strict=True))
    columns = [
        text_fragments("event_id", ids),  # quoted by Arrow, escaped by Python: its key and quotes kept apart
        value_fragments("value", amounts),  # written by Arrow, its key kept apart
        _column("x", names),  # whole fragments, as a list
    ]
    expected = [
        {key: value for key, value in (("event_id", i), ("value", a), ("x", n)) if value is not None}
        for i, a, n in rows
    ]
    assert joined_objects(columns, len(rows)).to_pylist() == _expected(expected)
