"""
Columnar reading: a query's rows as Arrow record batches, turned into DataFrames of ``chunk_size`` rows.

One :class:`ArrowBatchSource` subclass per driver that can hand out Arrow batches. Today that is PostgreSQL
through ADBC (``pip install 'airflow-provider-gravity[arrow]'``), which reads with a binary ``COPY`` and
builds the columns in C. A warehouse whose client already speaks Arrow (Snowflake's
``fetch_arrow_batches``, BigQuery's ``to_arrow_iterable``) would be one more small subclass.

A batch is used only when every column has a type the event builder reads exactly as the row-by-row
path does (:data:`READABLE_TYPES`); otherwise the source steps aside before any row is read, and the
rows are read row by row instead.
"""

from __future__ import annotations

import decimal
import importlib.util
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, ClassVar, cast

from airflow_provider_gravity.conversions.read.columns import MONEY_COLUMN, contract_name

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from airflow.providers.common.sql.hooks.sql import DbApiHook

log = logging.getLogger(__name__)


#: PostgreSQL types whose Arrow form would read differently from the cursor's: ``money`` arrives as integer
#: cents, ``real`` as a float32 that widens to 0.10000000149011612, ``date`` can hold ``infinity``, which
#: pandas cannot. Queries with such columns are read by the cursor.
_UNEXACT_POSTGRES_TYPES = frozenset({b"money", b"float4", b"date"})


def _readable(field: pa.Field) -> bool:
    """Whether a column of this Arrow field becomes the same cells as the cursor gives."""
    import pyarrow as pa

    data_type = field.type
    if (field.metadata or {}).get(b"POSTGRESQL:type") in _UNEXACT_POSTGRES_TYPES:
        return False
    if isinstance(data_type, pa.BaseExtensionType):
        return _is_numeric_text(field)  # turned into Decimals, as the cursor gives them
    return bool(
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_integer(data_type)
        or pa.types.is_float64(data_type)
        or pa.types.is_boolean(data_type)
        or pa.types.is_timestamp(data_type)
        or pa.types.is_null(data_type)
    )


def _is_numeric_text(field: pa.Field) -> bool:
    """ADBC's NUMERIC: an opaque extension over the value's text (``"19.90"``, ``"NaN"``)."""
    import pyarrow as pa

    return (
        isinstance(field.type, pa.BaseExtensionType)
        and pa.types.is_string(field.type.storage_type)
        and (field.metadata or {}).get(b"POSTGRESQL:type") == b"numeric"
    )


class UnreadableSchema(Exception):
    """A column's Arrow type is not one the event builder reads exactly: read the rows another way."""


class ArrowBatchSource(ABC):
    """
    Reads one query as Arrow record batches.

    :param hook: the SQL hook of the warehouse.
    """

    #: The SQLAlchemy dialect names of the hooks this source reads for.
    dialects: ClassVar[frozenset[str]] = frozenset()
    #: The module that must be importable for this source to be used.
    driver_module: ClassVar[str] = ""

    def __init__(self, hook: DbApiHook) -> None:
        self.hook = hook

    @classmethod
    def available_for(cls, hook: DbApiHook) -> bool:
        """Whether this source reads for ``hook`` here: its dialect matches and its driver is installed."""
        return hook.dialect_name in cls.dialects and importlib.util.find_spec(cls.driver_module) is not None

    @abstractmethod
    def record_batches(self, sql: str) -> Generator[pa.RecordBatch, None, None]:
        """
        Run ``sql`` and yield its rows as record batches, holding only a batch or two at a time.

        :raises UnreadableSchema: before yielding anything, when a column cannot be read exactly.
        """


#: The driver's option for the bytes of one record batch, and ours: its default (16 MiB, about 110,000 rows of
#: a typical query) grew the task's peak memory by 38 MB for no speed; 2 MiB read 1,000,000 rows as fast.
BATCH_SIZE_HINT_OPTION = "adbc.postgresql.batch_size_hint_bytes"
BATCH_SIZE_HINT_BYTES = 2 * 1024 * 1024


class PostgresAdbcSource(ArrowBatchSource):
    """PostgreSQL through ``adbc-driver-postgresql``: a binary ``COPY`` of the result, decoded in C."""

    dialects = frozenset({"postgresql", "postgres"})
    driver_module = "adbc_driver_postgresql"

    def record_batches(self, sql: str) -> Generator[pa.RecordBatch, None, None]:
        import adbc_driver_postgresql.dbapi

        # libpq reads a URI without SQLAlchemy's driver suffix (postgresql+psycopg://).
        uri = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", self.hook.get_uri())
        with adbc_driver_postgresql.dbapi.connect(uri) as connection, connection.cursor() as cursor:
            cursor.adbc_statement.set_options(**{BATCH_SIZE_HINT_OPTION: str(BATCH_SIZE_HINT_BYTES)})
            cursor.execute(sql)
            reader = cursor.fetch_record_batch()
            unreadable = [field.name for field in reader.schema if not _readable(field)]
            if unreadable:
                raise UnreadableSchema(f"columns {', '.join(unreadable)} have types the Arrow path does not read")
            yield from reader


#: Every columnar source, asked in order.
ARROW_SOURCES: tuple[type[ArrowBatchSource], ...] = (PostgresAdbcSource,)


def arrow_source_for(hook: DbApiHook) -> ArrowBatchSource | None:
    """Return the first columnar source that reads for ``hook`` here, or ``None``."""
    for source in ARROW_SOURCES:
        if source.available_for(hook):
            return source(hook)
    return None


def arrow_chunks(batches: Iterator[pa.RecordBatch], chunk_size: int) -> Iterator[pd.DataFrame]:
    """
    Regroup record batches into DataFrames of ``chunk_size`` rows (the last one shorter).

    Integer columns with NULLs become Python integers (not float64, which would round ids beyond 2**53);
    text stays text, dates stay ``datetime.date``, timestamps become ``datetime64``.
    """
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        while batch.num_rows:
            take = min(chunk_size - pending_rows, batch.num_rows)
            pending.append(batch.slice(0, take))
            pending_rows += take
            batch = batch.slice(take)
            if pending_rows == chunk_size:
                yield _frame(pa.Table.from_batches(pending))
                pending, pending_rows = [], 0
    if pending_rows:
        yield _frame(pa.Table.from_batches(pending))


#: Python's datetime range in microseconds from the epoch: years 1 to 9999.
_EARLIEST_US = -62_135_596_800_000_000
_LATEST_US = 253_402_300_799_999_999
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000}
#: ADBC moves PostgreSQL's microseconds from 2000 to 1970 with an add that wraps: ``infinity`` (INT64_MAX) arrives
#: as this tick, near year -290,000 and far before any time PostgreSQL holds (4713 BC is -2.1e17), and would be
#: held at year 1. ``-infinity`` (INT64_MIN) arrives one above it, and is held at year 1 as it should be.
_ADBC_WRAPPED_INFINITY_US = (2**63 - 1) + 946_684_800_000_000 - 2**64


def _frame(table: pa.Table) -> pd.DataFrame:
    """
    Return the rows of ``table`` as the cursor gives them: NUMERIC as ``Decimal`` (``NaN`` a missing cell; the
    ``value`` amounts as their floats, which the events are written from, see :func:`_amounts`), integers
    beside NULLs as Python integers, timestamps beyond Python's years 1 to 9999 (``infinity``) held at those
    ends, as psycopg holds them.
    """
    import pandas as pd
    import pyarrow as pa

    numeric_decimals: dict[int, list[decimal.Decimal | None]] = {}
    for i, field in enumerate(table.schema):
        if _is_numeric_text(field):
            storage = pa.chunked_array([chunk.storage for chunk in table.column(i).chunks], type=pa.string())
            amounts = _amounts(field.name, storage)
            if amounts is not None:
                table = table.set_column(i, pa.field(field.name, pa.float64()), amounts)
                continue
            numeric_decimals[i] = _decimals(storage.to_pylist(), storage.null_count)
            table = table.set_column(i, pa.field(field.name, pa.null()), pa.nulls(table.num_rows))
        elif pa.types.is_timestamp(field.type) and field.type.unit in _PER_SECOND:
            table = table.set_column(i, field, _held_in_python_range(table.column(i), field.type))
    frame = table.to_pandas(integer_object_nulls=True, date_as_object=True)
    for i, decimals in numeric_decimals.items():
        frame.isetitem(i, pd.Series(decimals, index=frame.index, dtype=object))
    return frame


#: NUMERIC text whose float is the float of its Decimal and below 2**53 (15 digits before the point at most), where
#: the amount is sent as its float: PostgreSQL writes a number as digits, a point and digits, nothing else.
_PLAIN_AMOUNT = r"^-?[0-9]{1,15}(\.[0-9]+)?$"


def _amounts(name: str, texts: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """
    Return the floats of a ``value`` column of NUMERIC texts, parsed by Arrow (correctly rounded, as ``float`` of
    the ``Decimal`` is), or ``None`` to keep the Decimals: for another column, a NULL, ``NaN``, an infinity, or an
    amount of 2**53 or more. Below 2**53 the event builder reads an amount through its float alone, so the events
    are the same, without a ``Decimal`` a row.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if contract_name(name) != MONEY_COLUMN or texts.null_count or not len(texts):
        return None
    if not pc.all(pc.match_substring_regex(texts, _PLAIN_AMOUNT)).as_py():
        return None
    return texts.cast(pa.float64())


def _decimals(texts: list[str | None], nulls: int) -> list[decimal.Decimal | None]:
    """Return the ``Decimal`` of each NUMERIC text, None where it is null; without nulls, one ``map`` in C."""
    if not nulls:
        return list(map(decimal.Decimal, cast("list[str]", texts)))
    return [None if text is None else decimal.Decimal(text) for text in texts]


def _held_in_python_range(column: pa.ChunkedArray, data_type: pa.TimestampType) -> pa.ChunkedArray:
    import pyarrow as pa
    import pyarrow.compute as pc

    scale = 1_000_000 // _PER_SECOND[data_type.unit]
    ticks = column.cast(pa.int64())
    if data_type.unit == "us":
        ticks = pc.if_else(pc.equal(ticks, _ADBC_WRAPPED_INFINITY_US), _LATEST_US, ticks)
    # skip_nulls=False: a NULL stays NULL (with the default, the other operand would take its place).
    at_most = pc.min_element_wise(ticks, _LATEST_US // scale, skip_nulls=False)
    held = pc.max_element_wise(at_most, _EARLIEST_US // scale, skip_nulls=False)
    return held.cast(data_type)
