"""
The read paths against the real PostgreSQL: Arrow batches (ADBC) give the same events as the cursor. The cursor is
PostgresHook's engine, psycopg 3, the driver the operator reads with (not the tests' psycopg2 seeding engine).
"""

from __future__ import annotations

import logging

import pytest
import sqlalchemy

from airflow_provider_gravity.conversions.cells import cell_text
from airflow_provider_gravity.conversions.events.build import EventSettings, build_events
from airflow_provider_gravity.conversions.pii.user_fields import PiiCache
from airflow_provider_gravity.conversions.read.arrow import PostgresAdbcSource, arrow_chunks, arrow_source_for
from airflow_provider_gravity.conversions.read.chunks import read_chunks, stream_query
from airflow_provider_gravity.conversions.read.columns import normalize_column_names
from tests.support.databases import operator_postgres_hook

pytest.importorskip("adbc_driver_postgresql", reason="the [arrow] extra is not installed")

NOW = 1_800_000_000  # 2027-01-15
EDGE_ROWS = """
CREATE TABLE {schema}.edge (
    seq int PRIMARY KEY, id bigint, name text, created timestamptz, local_time timestamp, amount numeric(20, 4),
    ratio double precision, paid boolean, num numeric, email text, phone text, country text
);
INSERT INTO {schema}.edge VALUES
    (1, 1152921504606846977, 'Zoë 🎉', '2026-01-01 10:00:00+00', '2026-01-01 10:00:00', 50.20, 1.5, true,
     42.0, ' José.Smith@Example.COM ', '+33 6 12 34 56 78', 'FR'),
    (2, NULL, '', '0001-01-01 00:00:00+00', '0001-01-01 00:00:00', 'NaN', 'NaN', NULL, 'NaN', 'not-an-email',
     '12', 'us'),
    (3, 9223372036854775807, NULL, '9999-12-31 23:59:59+00', '9999-12-31 23:59:59', 12345678901234.5678,
     'Infinity', false, 19.90, NULL, NULL, NULL),
    (4, -1, 'tab	and "quotes" \\ slash', NULL, NULL, -3, -0.0, true, 0.000, 'a@b.co', '2025550123', 'US'),
    (5, 7, 'x', '2026-03-08 02:30:00+00', '2026-03-08 02:30:00', 0, 0, false, 1E+3, 'A@B.CO',
     '(202) 555-0123', 'CA')
"""
SQL = """
SELECT CAST(id AS text) AS event_id, id AS external_id, name AS custom_name, created AS event_time,
       local_time AS custom_local, amount AS value, ratio AS custom_ratio, paid AS custom_paid, num AS custom_num,
       num AS order_id, CASE WHEN seq = 3 THEN 'infinity'::timestamptz END AS custom_forever,
       email AS em, phone AS ph, country
FROM {schema}.edge ORDER BY seq
"""


@pytest.fixture
def edge_table(postgres):
    engine, schema = postgres
    with engine.begin() as connection:
        for statement in EDGE_ROWS.format(schema=schema).split(";"):
            if statement.strip():
                connection.exec_driver_sql(statement)
    return engine, schema


def _postgres_hook():
    return operator_postgres_hook("warehouse")


def _built(frames) -> list:
    cache, settings = PiiCache(), EventSettings(event_name="Purchase", timezone="America/New_York")
    built = []
    for frame in frames:
        frame.columns = normalize_column_names(frame.columns)
        chunk = build_events(frame, settings, NOW, cache)
        built.extend(zip(chunk.encoded, chunk.reasons, chunk.event_ids, chunk.coverage, strict=True))
    return built


@pytest.mark.parametrize("chunk_size", [1, 2, 10_000])
def test_arrow_batches_build_the_same_events_as_the_cursor_for_edge_values(edge_table, chunk_size):
    _, schema = edge_table
    sql = SQL.format(schema=schema)
    hook = _postgres_hook()

    source = arrow_source_for(hook)
    assert isinstance(source, PostgresAdbcSource)
    arrow_frames = list(arrow_chunks(source.record_batches(sql), chunk_size))
    engine = hook.get_sqlalchemy_engine()  # psycopg 3, as the operator streams
    try:
        cursor_frames = list(stream_query(engine, sql, None, chunk_size))
    finally:
        engine.dispose()

    assert [len(frame) for frame in arrow_frames] == [len(frame) for frame in cursor_frames]
    arrow_built, cursor_built = _built(arrow_frames), _built(cursor_frames)
    assert arrow_built == cursor_built
    # The big ids beside a NULL keep every digit on the Arrow path too.
    assert '"external_id":["1152921504606846977"]' in arrow_built[0][0]
    assert arrow_built[2][1] == "event_time_in_future"
    # NUMERIC reads as the cursor's Decimal: 42.0 is the text "42" and the integer 42, NaN a missing cell.
    assert '"order_id":"42"' in arrow_built[0][0] and '"num":42,' in arrow_built[0][0]
    # 'infinity' is held at year 9999 by both readers (psycopg 3 raised DataError on it).
    forever = [cell_text(frame["custom_forever"].iloc[i]) for frame in cursor_frames for i in range(len(frame))]
    assert forever[2] == "9999-12-31T23:59:59.999999+00:00"


def test_read_chunks_takes_the_arrow_path_for_postgres_without_parameters(edge_table, caplog):
    _, schema = edge_table
    hook = _postgres_hook()
    with caplog.at_level(logging.INFO, logger="airflow_provider_gravity.conversions.read.chunks"):
        frames = list(read_chunks(hook, SQL.format(schema=schema), None, 2))

    assert "as Arrow batches" in caplog.text, caplog.text
    assert [len(frame) for frame in frames] == [2, 2, 1]


@pytest.mark.parametrize(
    ("column_type", "cell"),
    [
        ("text[]", "'{x,y}'"),  # a list
        ("jsonb", "'{\"k\": 1}'"),  # parsed by the cursor's driver
        ("money", "12.5"),  # integer cents through Arrow
        ("real", "0.1"),  # a float32 that widens to 0.10000000149011612
        ("date", "'2026-01-01'"),  # read by the cursor: Arrow's dates can hold 'infinity', pandas' cannot
    ],
)
def test_a_column_arrow_cannot_read_exactly_falls_back_to_the_cursor_before_any_row(
    postgres, caplog, column_type, cell
):
    engine, schema = postgres
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE {schema}.items (id text, at timestamptz, extra {column_type})")
        connection.exec_driver_sql(f"INSERT INTO {schema}.items VALUES ('a', '2026-01-01 00:00:00+00', {cell})")
    sql = f"SELECT id AS event_id, at AS event_time, extra AS custom_extra FROM {schema}.items"

    with caplog.at_level(logging.INFO, logger="airflow_provider_gravity.conversions.read.chunks"):
        frames = list(read_chunks(_postgres_hook(), sql, None, 100))

    assert "cannot read this query" in caplog.text and "custom_extra" in caplog.text
    assert "server-side cursor" in caplog.text
    assert [reason for _, reason, *_ in _built(frames)] == [None]


def test_a_query_with_parameters_is_read_by_the_cursor(postgres, caplog):
    engine, schema = postgres
    with caplog.at_level(logging.INFO, logger="airflow_provider_gravity.conversions.read.chunks"):
        frames = list(read_chunks(_postgres_hook(), "SELECT %(id)s AS event_id, now() AS event_time", {"id": "p"}, 10))

    assert "server-side cursor" in caplog.text and "Arrow" not in caplog.text
    assert frames[0]["event_id"].tolist() == ["p"]


def test_the_arrow_path_holds_infinity_at_year_9999_not_at_year_1(postgres):
    """
    ADBC moves PostgreSQL's microseconds from 2000 to 1970 with a wrapping add: ``infinity`` arrived near year
    -290,000 and was held at year 1 (``bad_event_time``, and ``0001-01-01`` sent in a custom key), where the cursor
    holds it at year 9999.
    """
    _, schema = postgres
    sql = """
        SELECT 'e-' || s AS event_id, v AS event_time, v AS custom_at, v::timestamp AS custom_local
        FROM (VALUES (1, 'infinity'::timestamptz), (2, '-infinity'), (3, '2026-01-01 00:00:00+00')) AS x(s, v)
        WHERE s >= {first} ORDER BY s"""
    hook = _postgres_hook()
    source = arrow_source_for(hook)
    assert isinstance(source, PostgresAdbcSource)

    arrow_frames = list(arrow_chunks(source.record_batches(sql.format(first=1)), 10))
    cursor_frames = list(read_chunks(hook, sql.format(first="%(first)s"), {"first": 1}, 10))

    for frames in (arrow_frames, cursor_frames):
        frame = frames[0]
        assert [cell_text(cell) for cell in frame["custom_at"].tolist()[:2]] == [
            "9999-12-31T23:59:59.999999+00:00",
            "0001-01-01T00:00:00+00:00",
        ]
        assert [cell_text(cell) for cell in frame["custom_local"].tolist()[:2]] == [
            "9999-12-31T23:59:59.999999",
            "0001-01-01T00:00:00",
        ]
    arrow_built, cursor_built = _built(arrow_frames), _built(cursor_frames)
    assert [reason for _, reason, *_ in arrow_built] == ["event_time_in_future", "bad_event_time", None]
    assert arrow_built == cursor_built


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_the_cursor_path_yields_every_row_once_in_order_with_literal_percent_signs(postgres, driver):
    engine, _ = postgres
    url = engine.url.set(drivername=f"postgresql+{driver}")
    sql = "SELECT x AS event_id, 'a%b' AS note FROM generate_series(1, 25001) x WHERE x % 1 = 0 ORDER BY x"
    driver_engine = sqlalchemy.create_engine(url)
    try:
        frames = list(stream_query(driver_engine, sql, None, 10_000))
    finally:
        driver_engine.dispose()

    assert [len(frame) for frame in frames] == [10_000, 10_000, 5_001]
    assert [value for frame in frames for value in frame["event_id"].tolist()] == list(range(1, 25_002))
    assert {note for frame in frames for note in frame["note"].tolist()} == {"a%b"}


AMOUNTS = [
    "0.1",
    "0.30000000000000004",
    "2.675",
    "1.0000000000000002220446049250313080847263336181640625",  # halfway between two doubles
    "0.1000000000000000055511151231257827021181583404541015625",
    "123456789012345.678901234567890123456789",  # 15 digits before the point: the float path's largest
    "999999999999999.9999999999999999",  # rounds up to 1e15
    "-0.00",
    "-12.5",
    "19.90",
    "4503599627370497.5",  # 16 digits: kept as a Decimal
    "0.000001",
    "1e-7",
    "7",
]


@pytest.mark.parametrize("with_large", [False, True])
def test_numeric_amounts_read_as_floats_give_the_cursors_events(postgres, with_large):
    engine, schema = postgres
    amounts = AMOUNTS if with_large else [amount for amount in AMOUNTS if amount != "4503599627370497.5"]
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE {schema}.amounts (seq int, amount numeric)")
        for seq, amount in enumerate(amounts):
            connection.exec_driver_sql(f"INSERT INTO {schema}.amounts VALUES ({seq}, '{amount}')")
    sql = (
        f"SELECT CAST(seq AS text) AS event_id, TIMESTAMPTZ '2026-01-01 00:00:00+00' AS event_time, "
        f"amount AS value, amount AS custom_amount FROM {schema}.amounts ORDER BY seq"
    )
    hook = _postgres_hook()
    source = arrow_source_for(hook)
    assert isinstance(source, PostgresAdbcSource)
    arrow_frames = list(arrow_chunks(source.record_batches(sql), 10_000))
    engine = hook.get_sqlalchemy_engine()
    try:
        cursor_frames = list(stream_query(engine, sql, None, 10_000))
    finally:
        engine.dispose()

    # The amounts are floats unless one of them is 2**53 or more; custom_ NUMERIC stays Decimal, every digit.
    assert str(arrow_frames[0]["value"].dtype) == ("object" if with_large else "float64")
    assert arrow_frames[0]["custom_amount"].dtype == object
    assert _built(arrow_frames) == _built(cursor_frames)
