"""Reading raw warehouse cells: what counts as missing, and how list cells are split."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import pandas as pd

_LIST_TYPES = (list, tuple, np.ndarray)


def is_missing(value: Any) -> bool:
    """Return True for None, NaN, NaT, ``pd.NA`` and empty or whitespace-only strings."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return False


def scalar_text(value: Any) -> str | None:
    """Turn one scalar cell into stripped text, or None when it is missing.

    Integral floats (what pandas makes of an integer column holding NaN) lose their ``.0``.
    """
    if is_missing(value):
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if number.is_integer():
            return str(int(number))
        return repr(number)
    return str(value).strip() or None


def split_cell(value: Any) -> tuple[Any, ...]:
    """Return the elements of a cell: a list-like cell or a JSON array string is split, a scalar is one element.

    Missing cells and empty lists give an empty tuple.
    """
    if isinstance(value, _LIST_TYPES):
        return tuple(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                parsed = json.loads(text)
            except ValueError:
                return (value,)
            if isinstance(parsed, list):
                return tuple(parsed)
        return (value,) if text else ()
    if is_missing(value):
        return ()
    return (value,)


def factorize_cells(values: pd.Series | np.ndarray | list) -> tuple[np.ndarray, list[Hashable]]:
    """Factorize cells that may hold lists: codes per row (-1 for missing) and the distinct cells.

    List-like cells become tuples so they can be compared; pandas' own factorize is used when no cell
    is a list, which is the common case and much faster.
    """
    array = values.to_numpy(dtype=object) if isinstance(values, pd.Series) else np.asarray(values, dtype=object)
    try:
        codes, uniques = pd.factorize(array, use_na_sentinel=True)
        return codes, list(uniques)
    except TypeError:
        pass
    hashable = np.empty(len(array), dtype=object)
    for position, value in enumerate(array):
        hashable[position] = tuple(value) if isinstance(value, _LIST_TYPES) else value
    codes, uniques = pd.factorize(hashable, use_na_sentinel=True)
    return codes, list(uniques)


def map_distinct(values: pd.Series, function: Callable[[Any], str | None]) -> pd.Series:
    """Apply ``function`` once per distinct non-missing cell and spread the results back over the rows.

    The result is a ``string`` Series on the same index, NA where the cell is missing or ``function``
    returned None.
    """
    codes, uniques = factorize_cells(values)
    mapped = np.empty(len(uniques) + 1, dtype=object)
    mapped[: len(uniques)] = [function(value) for value in uniques]
    mapped[len(uniques)] = None
    return pd.Series(mapped[codes], index=values.index, dtype="string")
