"""Chunks made ready for the events stage, once per chunk: contract names, and every cell readable one by one."""

from __future__ import annotations

import decimal
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from airflow_provider_gravity.conversions.read.columns import normalize_column_names


class PreparedChunk(NamedTuple):
    """
    A chunk of rows as the events stage reads it.

    :param frame: the rows, named by the column contract; signaling NaNs quieted and zoned times beyond
        Python's years held as :class:`UnreadableTime`. The reader's frame is never changed: a column that
        needs a change is replaced in a shallow copy.
    """

    frame: pd.DataFrame


def prepare_chunk(frame: pd.DataFrame) -> PreparedChunk:
    """
    Prepare a chunk as the reader gave it, with its column names lower-cased and checked against the contract.

    :raises ColumnContractError: naming any unknown, duplicate or missing required column.
    """
    names = normalize_column_names(frame.columns)
    if list(frame.columns) != names:
        frame = frame.copy(deep=False)
        frame.columns = names
    return prepare_cells(frame)


def prepare_cells(frame: pd.DataFrame) -> PreparedChunk:
    """Prepare a chunk whose column names follow the contract already, with its cells made readable one by one."""
    prepared = frame.copy(deep=False)
    changed = _quiet_signaling_nans(prepared)
    changed = _localizable_times(prepared) or changed
    return PreparedChunk(prepared if changed else frame)


def _quiet_signaling_nans(frame: pd.DataFrame) -> bool:
    """
    Replace the columns holding ``Decimal("sNaN")`` cells of ``frame`` by columns with ``Decimal("NaN")`` there:
    pandas raises on signaling NaNs (``isna`` compares them), and a NaN means a missing value like any other.

    :return: whether a column was replaced.
    """
    changed = False
    for name in frame.columns:
        column = frame[name]
        if column.dtype != object:
            continue
        try:
            column.isna()
        except (ArithmeticError, TypeError):
            frame[name] = column.map(_quiet_nan)
            changed = True
    return changed


def _localizable_times(frame: pd.DataFrame, keep: str = "event_time") -> bool:
    """
    Make every time-zone-aware datetime column of ``frame`` but ``keep`` readable cell by cell. pandas cannot
    turn a time beyond year 9999 in a zone into a Python datetime, and raises on the whole column; such a column
    is replaced by one where that cell is an :class:`UnreadableTime` (unreadable for every reader) and the others
    keep their value.

    :return: whether a column was replaced.
    """
    changed = False
    for position, name in enumerate(frame.columns):
        column = frame.iloc[:, position]
        if name != keep and isinstance(column.dtype, pd.DatetimeTZDtype) and _near_python_year_limits(column):
            frame.isetitem(position, pd.Series(_localized_cells(column), index=frame.index, dtype=object))
            changed = True
    return changed


#: A day inside Python's years 1 and 9999: no zone's offset takes a time between these out of that range.
_SAFE_UTC_RANGE = (np.datetime64("0001-01-02"), np.datetime64("9999-12-30"))


def _near_python_year_limits(column: pd.Series) -> bool:
    """Whether some time of a zoned column lies outside :data:`_SAFE_UTC_RANGE` in UTC (checked without Python)."""
    utc = column.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    earliest, latest = _SAFE_UTC_RANGE
    return bool(((utc < earliest) | (utc > latest)).any())


class UnreadableTime:
    """A time pandas cannot hold in its zone (beyond year 9999): no reader takes it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UnreadableTime()"


def _localized_cells(column: pd.Series) -> list[Any]:
    cells: list[Any] = []
    for position in range(len(column)):
        try:
            cells.append(column.iloc[position])
        except (NotImplementedError, ValueError, OverflowError):
            cells.append(UnreadableTime())
    return cells


def _quiet_nan(value: Any) -> Any:
    if isinstance(value, decimal.Decimal) and value.is_snan():
        return decimal.Decimal("NaN")
    return value
