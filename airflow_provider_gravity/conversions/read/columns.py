"""The column contract: the SQL's aliases are the mapping from warehouse rows to Gravity events."""

from __future__ import annotations

from collections.abc import Iterable

from airflow_provider_gravity.conversions.errors import ColumnContractError

__all__ = ["ColumnContractError", "normalize_column_names"]

REQUIRED_COLUMNS = ("event_id", "event_time")
EVENT_COLUMNS = ("event_name", "action_source", "event_source_url")
USER_COLUMNS = ("em", "ph", "fn", "ln", "external_id", "country")
PIXEL_COLUMNS = ("click_id", "visitor_id", "session_id", "client_user_agent", "user_data")
CONTEXT_COLUMNS = ("client_context",)
CUSTOM_DATA_COLUMNS = ("value", "currency", "order_id", "contents")
#: The amount of ``custom_data``, sent as a JSON number.
MONEY_COLUMN = "value"
CUSTOM_PREFIX = "custom_"
#: Longest ``event_name`` and ``event_id``: longer ones are refused (``*_too_long``); the delivery log's keys.
MAX_KEY_LENGTH = 255

KNOWN_COLUMNS = REQUIRED_COLUMNS + EVENT_COLUMNS + USER_COLUMNS + PIXEL_COLUMNS + CONTEXT_COLUMNS + CUSTOM_DATA_COLUMNS


def normalize_column_names(columns: Iterable[object]) -> list[str]:
    """
    Lower-case and trim the query's column names (some warehouses upper-case unquoted aliases) and check
    them against the contract.

    :raises ColumnContractError: naming any unknown, duplicate or missing required column.
    """
    names = [contract_name(column) for column in columns]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ColumnContractError(f"The query returns these columns more than once: {', '.join(duplicates)}.")
    unknown = [name for name in names if name not in KNOWN_COLUMNS and not _is_custom_key(name)]
    if unknown:
        raise ColumnContractError(
            f"Unknown column(s) {', '.join(repr(u) for u in unknown)} in the query. Alias each column to one of: "
            f"{', '.join(KNOWN_COLUMNS)}, or {CUSTOM_PREFIX}<key> for any other custom_data key."
        )
    shadowing = [name for name in names if _is_custom_key(name) and name[len(CUSTOM_PREFIX) :] in CUSTOM_DATA_COLUMNS]
    if shadowing:
        raise ColumnContractError(
            f"Column(s) {', '.join(repr(s) for s in shadowing)} would replace a custom_data key the operator checks: "
            f"alias them {', '.join(repr(s[len(CUSTOM_PREFIX) :]) for s in shadowing)} instead."
        )
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise ColumnContractError(
            f"The query has no {' and no '.join(repr(m) for m in missing)} column; both event_id and event_time "
            "are required (e.g. SELECT o.id AS event_id, o.created_at AS event_time, ...)."
        )
    return names


def contract_name(column: object) -> str:
    """Return the name the column contract reads a query's column by: trimmed, in lower case."""
    return str(column).strip().lower()


def _is_custom_key(name: str) -> bool:
    return name.startswith(CUSTOM_PREFIX) and len(name) > len(CUSTOM_PREFIX)
