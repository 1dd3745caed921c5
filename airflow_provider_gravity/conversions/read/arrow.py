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

import importlib.util
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from airflow.providers.common.sql.hooks.sql import DbApiHook

log = logging.getLogger(__name__)


def _readable(data_type: pa.DataType) -> bool:
    import pyarrow as pa

    if isinstance(data_type, pa.BaseExtensionType):
        # ADBC hands NUMERIC over as its text ("50.20", "NaN"), which the money reader parses like a Decimal.
        return _readable(data_type.storage_type)
    return bool(
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_integer(data_type)
        or pa.types.is_floating(data_type)
        or pa.types.is_boolean(data_type)
        or pa.types.is_timestamp(data_type)
        or pa.types.is_date(data_type)
        or pa.types.is_null(data_type)
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
    def record_batches(self, sql: str) -> Iterator[pa.RecordBatch]:
        """
        Run ``sql`` and yield its rows as record batches, holding only a batch or two at a time.

        :raises UnreadableSchema: before yielding anything, when a column cannot be read exactly.
        """


class PostgresAdbcSource(ArrowBatchSource):
    """PostgreSQL through ``adbc-driver-postgresql``: a binary ``COPY`` of the result, decoded in C."""

    dialects = frozenset({"postgresql", "postgres"})
    driver_module = "adbc_driver_postgresql"

    def record_batches(self, sql: str) -> Iterator[pa.RecordBatch]:
        import adbc_driver_postgresql.dbapi

        # libpq reads a URI without SQLAlchemy's driver suffix (postgresql+psycopg://).
        uri = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", self.hook.get_uri())
        with adbc_driver_postgresql.dbapi.connect(uri) as connection, connection.cursor() as cursor:
            cursor.execute(sql)
            reader = cursor.fetch_record_batch()
            unreadable = [field.name for field in reader.schema if not _readable(field.type)]
            if unreadable:
                raise UnreadableSchema(f"columns {', '.join(unreadable)} have types the Arrow path does not read")
            yield from reader


#: Every columnar source, asked in order.
ARROW_SOURCES: tuple[type[ArrowBatchSource], ...] = (PostgresAdbcSource,)


def arrow_source_for(hook: DbApiHook) -> ArrowBatchSource | None:
    """The first columnar source that reads for ``hook`` here, or ``None``."""
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


def _frame(table: pa.Table) -> pd.DataFrame:
    options: dict[str, Any] = {"integer_object_nulls": True, "date_as_object": True}
    return table.to_pandas(**options)
