"""
A query's rows as DataFrames of ``chunk_size`` rows, by the fastest way the warehouse offers.

:func:`read_chunks` chooses, in order: Arrow record batches (:mod:`.arrow`, PostgreSQL through ADBC when
installed and the query has no DB-API parameters); a server-side cursor through SQLAlchemy
(:func:`stream_query`: PostgreSQL, MySQL/MariaDB, Redshift); a DB-API cursor of the hook's connection for any
other common-sql hook (:func:`cursor_chunks`: SQLite, Snowflake, BigQuery, MSSQL). Memory holds a chunk or two,
whatever the size of the result.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import closing
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy

from airflow_provider_gravity.conversions.errors import ColumnContractError
from airflow_provider_gravity.conversions.read.arrow import UnreadableSchema, arrow_chunks, arrow_source_for
from airflow_provider_gravity.conversions.read.held_times import hold_times_beyond_python

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook

log = logging.getLogger(__name__)

MYSQL_NET_WRITE_TIMEOUT = 3_600
STREAMING_DIALECTS = frozenset({"postgresql", "postgres", "mysql", "mariadb", "redshift"})
#: SQLAlchemy's names of the drivers read through their own named cursor.
PSYCOPG_DRIVERS = frozenset({"psycopg2", "psycopg"})
READ_CURSOR_NAME = "gravity_conversions_read"


def stream_query(
    engine: sqlalchemy.Engine,
    sql: str,
    parameters: Mapping[str, Any] | Sequence[Any] | None,
    chunk_size: int,
) -> Iterator[pd.DataFrame]:
    """
    Run ``sql`` (written for the driver, with its parameter style) and yield DataFrames of ``chunk_size``
    rows. ``stream_results`` asks for a server-side cursor, so memory holds one chunk, not the result.
    Values keep their Python types (``Decimal``, ``datetime``, lists), cast by the pipeline, not by pandas.
    PostgreSQL dates and timestamps beyond Python's years 1 to 9999 (``infinity``, BC) are held at those ends
    (:mod:`.held_times`), as the Arrow reader holds them, instead of failing the read.
    """
    if engine.dialect.driver in PSYCOPG_DRIVERS:
        yield from _psycopg_chunks(engine, sql, parameters, chunk_size)
        return
    if not parameters and engine.dialect.paramstyle in ("format", "pyformat"):
        # The driver still parses placeholders (SQLAlchemy passes it empty parameters), so a literal
        # % (modulo, LIKE 'x%') must be doubled. With parameters, the DB-API rules are the user's.
        sql = sql.replace("%", "%%")
    with engine.connect() as connection:
        hold_times_beyond_python(connection.connection.dbapi_connection)
        if engine.dialect.name in ("mysql", "mariadb"):
            # The server drops a result nobody reads for net_write_timeout (60 s): sending pauses reading
            # while Gravity is slow or retried, so allow an hour.
            connection.exec_driver_sql(f"SET SESSION net_write_timeout = {MYSQL_NET_WRITE_TIMEOUT}")
            _one_statement_per_query(connection.connection.dbapi_connection)
        streaming = connection.execution_options(stream_results=True, max_row_buffer=chunk_size)
        result = streaming.exec_driver_sql(sql, parameters) if parameters else streaming.exec_driver_sql(sql)
        columns = list(result.keys())
        while rows := result.fetchmany(chunk_size):
            yield frame_of_rows([tuple(row) for row in rows], columns)


#: mysqlclient's mysql_set_server_option() value that turns multiple statements per query off.
_MYSQL_OPTION_MULTI_STATEMENTS_OFF = 1


def _one_statement_per_query(dbapi_connection: Any) -> None:
    """
    mysqlclient connects with multiple statements on: ``SELECT ...; SELECT ...`` read the first statement's rows
    and dropped the rest, a night delivered short and green. Off, the server refuses such text (a syntax error)
    before a row is read; a trailing semicolon or comment still reads. PyMySQL has them off already.
    """
    set_server_option = getattr(dbapi_connection, "set_server_option", None)
    if set_server_option is not None:
        set_server_option(_MYSQL_OPTION_MULTI_STATEMENTS_OFF)


def _psycopg_chunks(
    engine: sqlalchemy.Engine,
    sql: str,
    parameters: Mapping[str, Any] | Sequence[Any] | None,
    chunk_size: int,
) -> Iterator[pd.DataFrame]:
    """
    :func:`stream_query` for psycopg 2 and 3: a named (server-side) cursor of the driver itself, whose rows are
    tuples already; SQLAlchemy's rows cost half the read (4 µs a row), and its result buffers rows ahead, so
    its cursor cannot be read around it.
    """
    with engine.connect() as connection:
        driver_connection: Any = connection.connection.dbapi_connection
        hold_times_beyond_python(driver_connection)
        # Not closed here: on a dropped connection closing would raise over the error that matters. The
        # server closes it with the transaction, when the connection goes back to the pool.
        cursor = driver_connection.cursor(name=READ_CURSOR_NAME)
        cursor.itersize = chunk_size
        try:
            if parameters:
                cursor.execute(sql, parameters)
            else:  # the driver parses no placeholder: a literal % stays as it is
                cursor.execute(sql)
            _refuse_statements_after_the_query(cursor)
            rows = cursor.fetchmany(chunk_size)
            # A named cursor describes its columns once it has fetched.
            columns = [column[0] for column in cursor.description or ()]
            while rows:
                yield frame_of_rows(rows, columns)
                rows = cursor.fetchmany(chunk_size)
        except Exception as error:
            if driver_connection.closed:  # dropped: the pool must not roll back (and log) a dead connection
                connection.invalidate()
            if _is_several_statements_refusal(error):  # psycopg 3's own refusal: a retry would fail the same way
                raise ColumnContractError(_SEVERAL_STATEMENTS) from None
            raise


def _refuse_statements_after_the_query(cursor: Any) -> None:
    """
    psycopg 2 sends ``DECLARE ... FOR <sql>`` as one text: with ``SELECT ...; SELECT ...`` the cursor holds the
    first query's rows, the later statements run too, and their status replaces the cursor's (psycopg 3 refuses
    such text itself). Reading only part of what the query says would deliver a night short, green.
    """
    status = getattr(cursor, "statusmessage", None)  # None for psycopg 3's named cursors
    if status is not None and status != "DECLARE CURSOR":
        raise ColumnContractError(_SEVERAL_STATEMENTS)


_SEVERAL_STATEMENTS = (
    "The query is more than one SQL statement: the read would hold the first one's rows only. Give one "
    "statement (a trailing semicolon or comment is fine)."
)


def _is_several_statements_refusal(error: Exception) -> bool:
    """Whether ``error`` is PostgreSQL refusing several statements in one declared cursor (SQLSTATE 42601)."""
    return getattr(error, "sqlstate", None) == "42601" and "multiple commands" in str(error)


def frame_of_rows(rows: list[tuple[Any, ...]], columns: list[str]) -> pd.DataFrame:
    """
    Build a DataFrame of driver rows in which every value keeps its Python type and every digit.

    pandas reads a column of integers and NULLs as float64, which rounds ids beyond 2**53
    (``1152921504606846977`` would be sent as ``...976``): such columns are kept as Python objects.
    """
    try:
        frame = pd.DataFrame.from_records(rows, columns=columns, coerce_float=False)
    except UnicodeEncodeError:  # text pandas' Arrow-backed str dtype cannot hold (a lone surrogate): keep objects
        frame = pd.DataFrame(rows, columns=columns, dtype=object)
    for position, dtype in enumerate(frame.dtypes.tolist()):
        if dtype.kind == "f":
            cells = [row[position] for row in rows]
            if any(type(cell) is int for cell in cells):
                frame.isetitem(position, pd.Series(cells, index=frame.index, dtype=object))
    return frame


def read_chunks(
    hook: DbApiHook,
    sql: str,
    parameters: Mapping[str, Any] | Sequence[Any] | None,
    chunk_size: int,
) -> Generator[pd.DataFrame, None, None]:
    """
    Yield the rows of ``sql`` as DataFrames of ``chunk_size`` rows (the last one shorter).

    :param hook: the common-sql hook of the warehouse.
    :param sql: the query, in the driver's parameter style.
    :param parameters: DB-API parameters of the query; the Arrow path is used only without them.
    :param chunk_size: rows per DataFrame.
    """
    if not parameters and (source := arrow_source_for(hook)) is not None:
        batches = source.record_batches(sql)
        try:
            first = next(batches, None)
        except Exception as error:  # noqa: BLE001 - nothing was read yet: the row-by-row path reads it all
            batches.close()
            log.info("Reading rows one by one: the Arrow path cannot read this query (%s).", _reason(error))
        else:
            log.info("Reading %s rows as Arrow batches, %d rows at a time.", hook.dialect_name, chunk_size)
            yield from arrow_chunks(_prepended(first, batches), chunk_size)
            return
    if hook.dialect_name in STREAMING_DIALECTS:
        log.info("Streaming %s rows with a server-side cursor, %d rows at a time.", hook.dialect_name, chunk_size)
        engine = hook.get_sqlalchemy_engine()
        try:
            yield from stream_query(engine, sql, parameters, chunk_size)
        finally:
            engine.dispose()
        return
    log.info("Reading rows with the hook's DB-API cursor, %d rows at a time.", chunk_size)
    yield from cursor_chunks(hook, sql, parameters, chunk_size)


def cursor_chunks(
    hook: DbApiHook,
    sql: str,
    parameters: Mapping[str, Any] | Sequence[Any] | None,
    chunk_size: int,
) -> Iterator[pd.DataFrame]:
    """
    Yield the rows of ``sql`` from a DB-API cursor of the hook's connection, ``chunk_size`` at a time, each value
    kept as the driver gives it (:func:`frame_of_rows`). This is what the hook's ``get_df_by_chunks`` reads,
    without the dtype conversion of pandas: with ``dtype_backend="numpy_nullable"`` it decodes every bytes cell
    as UTF-8, and one BLOB that is not failed the whole read, where the event builder names such a cell
    unreadable.
    """
    with closing(hook.get_conn()) as connection:
        cursor = connection.cursor()
        try:
            if parameters is None:
                cursor.execute(sql)
            else:
                cursor.execute(sql, parameters)
            columns = [description[0] for description in cursor.description]
            while rows := cursor.fetchmany(chunk_size):
                yield frame_of_rows([tuple(row) for row in rows], columns)
        finally:
            cursor.close()


def _prepended(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    if first is not None:
        yield first
    yield from rest


def _reason(error: Exception) -> str:
    # A driver's message can quote the query or a connection string: only our own message is shown whole.
    return str(error) if isinstance(error, UnreadableSchema) else type(error).__name__
