"""Stream a query's rows in chunks through SQLAlchemy, with a server-side cursor where the driver has one."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import sqlalchemy

MYSQL_NET_WRITE_TIMEOUT = 3_600
STREAMING_DIALECTS = frozenset({"postgresql", "postgres", "mysql", "mariadb", "redshift"})


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
    """
    if not parameters and engine.dialect.paramstyle in ("format", "pyformat"):
        # The driver still parses placeholders (SQLAlchemy passes it empty parameters), so a literal
        # % (modulo, LIKE 'x%') must be doubled. With parameters, the DB-API rules are the user's.
        sql = sql.replace("%", "%%")
    with engine.connect() as connection:
        if engine.dialect.name in ("mysql", "mariadb"):
            # The server drops a result nobody reads for net_write_timeout (60 s): sending pauses reading
            # while Gravity is slow or retried, so allow an hour.
            connection.exec_driver_sql(f"SET SESSION net_write_timeout = {MYSQL_NET_WRITE_TIMEOUT}")
        streaming = connection.execution_options(stream_results=True, max_row_buffer=chunk_size)
        result = streaming.exec_driver_sql(sql, parameters) if parameters else streaming.exec_driver_sql(sql)
        columns = list(result.keys())
        while rows := result.fetchmany(chunk_size):
            yield frame_of_rows([tuple(row) for row in rows], columns)


def frame_of_rows(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    """
    A DataFrame of driver rows in which every value keeps its Python type and every digit.

    pandas reads a column of integers and NULLs as float64, which rounds ids beyond 2**53
    (``1152921504606846977`` would be sent as ``...976``): such columns are kept as Python objects.
    """
    frame = pd.DataFrame.from_records(rows, columns=columns, coerce_float=False)
    for position, dtype in enumerate(frame.dtypes.tolist()):
        if dtype.kind == "f":
            cells = [row[position] for row in rows]
            if any(type(cell) is int for cell in cells):
                frame.isetitem(position, pd.Series(cells, index=frame.index, dtype=object))
    return frame
