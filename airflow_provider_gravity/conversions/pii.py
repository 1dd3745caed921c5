"""Turn a chunk's user columns into the hashed ``user_data`` fields sent to Gravity.

Each distinct cell is normalized and hashed once; its result is kept in a :class:`PiiCache` that the
chunks of a run share, so a repeat customer costs one dictionary lookup per field, done in C.
Nothing returned holds plaintext: only SHA-256 digests, external ids and drop counters.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import is_, itemgetter
from typing import Any

import numpy as np
import pandas as pd
import phonenumbers

from airflow_provider_gravity.conversions.cells import scalar_text, split_cell
from airflow_provider_gravity.conversions.emails import normalize_email_text
from airflow_provider_gravity.conversions.hashing import hash_text
from airflow_provider_gravity.conversions.names import normalize_name_text
from airflow_provider_gravity.conversions.phones import PhoneNormalizer, phone_text

USER_FIELDS = ("em", "ph", "fn", "ln", "external_id")
DROP_REASONS = ("invalid_email", "invalid_phone", "empty_first_name", "empty_last_name", "invalid_country")

# What one distinct cell gives: the value sent (a list of strings, a digest, a region, or None) and
# how many present values were dropped.
_CellResult = tuple[Any, int]
_MISSING: _CellResult = (None, 0)
_DROPPED: _CellResult = (None, 1)
_LIST_TYPES = (list, tuple, np.ndarray)


@dataclass(frozen=True)
class HashedUserFields:
    """The ``user_data`` match keys of one chunk, aligned with its rows.

    :ivar fields: for each user column present, a list with one cell per row. ``em``, ``ph`` and
        ``external_id`` cells are lists of strings (digests, or plain external ids) or None;
        ``fn`` and ``ln`` cells are a digest or None. Rows with the same input share the same list
        object: treat the cells as read-only.
    :ivar drops: how many present values were dropped, by reason (see :data:`DROP_REASONS`).
    """

    fields: dict[str, list] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))


class PiiCache:
    """Results for distinct values, shared by the chunks of one run so repeat customers cost a lookup.

    It lives in the worker's memory only (its keys are the raw cells) and is never logged or
    returned; create one per run and drop it at the end. A table is emptied when it grows past
    ``max_entries``.

    :param max_entries: the most distinct values kept per table.
    """

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.max_entries = max_entries
        self._tables: dict[Hashable, dict] = {}

    def table(self, name: Hashable) -> dict:
        """The table of results for one field (or row layout) and set of options."""
        table = self._tables.setdefault(name, {})
        if len(table) > self.max_entries:
            table.clear()
        return table


def _hashable(cell: Any) -> Hashable:
    return tuple(_hashable(element) for element in cell) if isinstance(cell, _LIST_TYPES) else cell


def _is_cacheable(cell: Hashable) -> bool:
    """Whether a result may be stored with ``cell`` as its dict key.

    1, 1.0 and True are the same key but not the same text, so bools and numbers equal to 0 or 1 are
    left out (recomputed each time), as are types whose equality we do not control.
    """
    kind = type(cell)
    if kind is str or cell is None:
        return True
    if kind is int or kind is float:
        return cell != 0 and cell != 1
    if kind is tuple:
        return all(map(_is_cacheable, cell))
    return False


def _is_plain_scalar(cell: Any) -> bool:
    if type(cell) is str:
        return "[" not in cell
    return not isinstance(cell, (*_LIST_TYPES, str))


def _list_result(cell: Any, element_value: Callable[[Any], str | None | bool]) -> _CellResult:
    """Apply ``element_value`` (kept string, None for missing, False for dropped) to each element of a cell."""
    if _is_plain_scalar(cell):  # the common case: one value
        value = element_value(cell)
        if value is None:
            return _MISSING
        return _DROPPED if value is False else ([value], 0)
    kept: dict[str, None] = {}
    dropped = 0
    for element in split_cell(cell):
        value = element_value(element)
        if value is False:
            dropped += 1
        elif value is not None:
            kept[value] = None
    return (list(kept) if kept else None), dropped


def _email_value(element: Any) -> str | None | bool:
    text = element.strip() if type(element) is str else scalar_text(element)
    if not text:
        return None
    normalized = normalize_email_text(text)
    return False if normalized is None else hash_text(normalized)


def _email_result(cell: Any) -> _CellResult:
    if type(cell) is str and "[" not in cell:  # inlined common case: this runs once per new customer
        text = cell.strip()
        if not text:
            return _MISSING
        normalized = normalize_email_text(text)
        return _DROPPED if normalized is None else ([hash_text(normalized)], 0)
    return _list_result(cell, _email_value)


def _external_id_result(cell: Any) -> _CellResult:
    if type(cell) is int:
        return [str(cell)], 0
    return _list_result(cell, scalar_text)


def _name_result(cell: Any) -> _CellResult:
    text = scalar_text(cell)
    if text is None:
        return _MISSING
    normalized = normalize_name_text(text)
    return _DROPPED if normalized is None else (hash_text(normalized), 0)


def _country_result(cell: Any) -> _CellResult:
    """The region a ``country`` cell names, or None (with one drop when a value was there but unknown)."""
    text = scalar_text(cell)
    country = None if text is None else text.upper()
    if country in phonenumbers.SUPPORTED_REGIONS:
        return country, 0
    return None, int(text is not None)


def _phone_result(normalizer: PhoneNormalizer, with_plus: bool) -> Callable[[tuple[Any, str]], _CellResult]:
    normalize = normalizer.normalize_text
    skip = 0 if with_plus else 1

    def value(element: Any, region: str) -> str | None | bool:
        text = element if type(element) is str else phone_text(element)
        if text is None or not text.strip():
            return None
        e164 = normalize(text, region)
        if e164 is None:
            return False
        return hash_text(e164[skip:] if e164.startswith("+") else e164)

    def result(key: tuple[Any, str]) -> _CellResult:
        cell, region = key
        if type(cell) is str and "[" not in cell:  # inlined common case
            kept = value(cell, region)
            if kept is None:
                return _MISSING
            return _DROPPED if kept is False else ([kept], 0)
        return _list_result(cell, lambda element: value(element, region))

    return result


def _results_by_row(
    keys: list, table: dict, compute: Callable[[Any], _CellResult], cacheable: Callable[[Any], bool]
) -> list[_CellResult]:
    """One result per row: cached ones looked up in C, the others computed once per distinct key."""
    try:
        results = list(map(table.get, keys))
    except TypeError:  # list cells (lists, arrays) are not hashable
        keys = [_hashable(key) for key in keys]
        results = list(map(table.get, keys))
    missing = np.fromiter(map(is_, results, repeat(None)), dtype=bool, count=len(results))
    if not missing.any():
        return results
    computed: dict[Hashable, _CellResult] = {}
    for key in dict.fromkeys(compress(keys, missing.tolist())):
        computed[key] = result = compute(key)
        if type(key) is str or cacheable(key):
            table[key] = result
    for position in np.flatnonzero(missing).tolist():
        results[position] = computed[keys[position]]
    return results


def _field(frame: pd.DataFrame, column: str, table: dict, compute: Callable[[Any], _CellResult]) -> tuple[list, int]:
    keys = frame[column].to_numpy(dtype=object).tolist()
    results = _results_by_row(keys, table, compute, _is_cacheable)
    return list(map(itemgetter(0), results)), sum(map(itemgetter(1), results))


def _phone_field(
    frame: pd.DataFrame, regions: list[str] | None, default_region: str, table: dict,
    compute: Callable[[tuple[Any, str]], _CellResult],
) -> tuple[list, int]:
    cells = frame["ph"].to_numpy(dtype=object).tolist()
    keys = list(zip(cells, regions if regions is not None else [default_region] * len(cells), strict=True))
    results = _results_by_row(keys, table, compute, lambda key: _is_cacheable(key[0]))
    return list(map(itemgetter(0), results)), sum(map(itemgetter(1), results))


def hash_user_fields(
    frame: pd.DataFrame,
    *,
    default_region: str = "US",
    phone_with_plus: bool = False,
    phone_backend: str = "phonenumbers",
    cache: PiiCache | None = None,
) -> HashedUserFields:
    """Normalize and hash the user columns of one chunk.

    Reads any of ``em``, ``ph``, ``fn``, ``ln``, ``external_id`` and ``country`` (other columns are
    ignored). ``em``, ``ph`` and ``external_id`` cells may hold one value or a list (Python list or
    tuple, numpy array, JSON array string); elements are normalized one by one and duplicates removed
    in order. Values that are already 64 hexadecimal characters are kept as digests, lowercased.

    :param frame: the chunk.
    :param default_region: phone region for rows without a valid ``country``.
    :param phone_with_plus: hash phones as ``+<digits>`` instead of the E.164 digits alone.
    :param phone_backend: ``"phonenumbers"`` (default) or ``"rphonenumbers"``.
    :param cache: results shared by the chunks of a run (see :class:`PiiCache`); pass the same one for
        every chunk. None keeps results for this chunk only.
    :return: the hashed fields, row-aligned, and the drop counters.
    """
    if default_region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"default_region must be an ISO 3166 alpha-2 region phonenumbers knows, got {default_region!r}."
        )
    cache = cache if cache is not None else PiiCache()
    result = HashedUserFields()
    fields, drops = result.fields, result.drops
    columns = frame.columns
    if "em" in columns:
        fields["em"], drops["invalid_email"] = _field(frame, "em", cache.table("em"), _email_result)
    regions = None
    if "country" in columns:
        countries, drops["invalid_country"] = _field(frame, "country", cache.table("country"), _country_result)
        regions = [default_region if country is None else country for country in countries]
    if "ph" in columns:
        table = cache.table(("ph", phone_backend, phone_with_plus))
        compute = _phone_result(PhoneNormalizer(phone_backend), phone_with_plus)
        fields["ph"], drops["invalid_phone"] = _phone_field(frame, regions, default_region, table, compute)
    if "fn" in columns:
        fields["fn"], drops["empty_first_name"] = _field(frame, "fn", cache.table("names"), _name_result)
    if "ln" in columns:
        fields["ln"], drops["empty_last_name"] = _field(frame, "ln", cache.table("names"), _name_result)
    if "external_id" in columns:
        fields["external_id"], _ = _field(frame, "external_id", cache.table("external_id"), _external_id_result)
    return result
