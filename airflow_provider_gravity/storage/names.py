"""Names of the provider's tables and indexes: a table name checked and split, index and sibling names that fit."""

from __future__ import annotations

import hashlib
import re

import sqlalchemy as sa

#: The longest name; PostgreSQL cuts names at 63 bytes, MySQL refuses names over 64.
MAX_NAME_LENGTH = 63

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def parse_table_name(
    table_name: str, schema: str | None = None, *, subject: str | None = None
) -> tuple[str | None, str]:
    """
    Validate a table name and split it into ``(schema, table)``.

    Only letters, digits and underscores are accepted (not starting with a digit, at most 63 characters per
    part), with one optional ``schema.`` prefix, so that the name can never carry SQL.

    :param table_name: ``table`` or ``schema.table``.
    :param schema: schema given separately; not allowed together with a dotted ``table_name``.
    :param subject: what the table holds (``"delivery log"``): the error then names it and the part that is
        wrong; without, one message says what a table name must be.
    :raises ValueError: if a part is not a plain identifier.
    """
    parts = table_name.split(".") if isinstance(table_name, str) else []
    if len(parts) == 2 and schema is not None:
        raise ValueError(
            f"{(subject or 'table').capitalize()} table {table_name!r} already names a schema; "
            f"do not pass schema={schema!r} too."
        )
    table = parts[-1] if 1 <= len(parts) <= 2 else None
    if len(parts) == 2:
        schema = parts[0]
    for label, part in (("table", table), ("schema", schema)):
        if part is None and label == "schema":
            continue
        if not isinstance(part, str) or not _IDENTIFIER.fullmatch(part):
            raise ValueError(_wrong_name(table_name, subject, label, part))
    assert table is not None  # a table that is not a string raised above
    return schema, table


def _wrong_name(table_name: object, subject: str | None, label: str, part: object) -> str:
    if subject is None:
        return (
            f"Invalid table name {table_name!r}: use 'table' or 'schema.table', letters, digits and underscores "
            "only, not starting with a digit, at most 63 characters a part."
        )
    if not isinstance(table_name, str):
        # The table's default name, e.g. gravity_delivery_log.
        return f"{subject.capitalize()} table name must be a string like 'gravity_{subject.replace(' ', '_')}'."
    if label == "table" and part is None:
        return f"{subject.capitalize()} table {table_name!r} must be 'table' or 'schema.table'."
    return (
        f"Invalid {subject} {label} name {part!r}: use letters, digits and underscores only, "
        "not starting with a digit, at most 63 characters."
    )


def qualified_name(table: sa.Table) -> str:
    """``schema.table``, or ``table`` when it has no schema."""
    return f"{table.schema}.{table.name}" if table.schema else table.name


def index_name(table: str, purpose: str) -> str:
    """``ix_<table>_<purpose>``, or when that is longer than 63 characters a cut name with a hash of the whole."""
    name = f"ix_{table}_{purpose}"
    if len(name) <= MAX_NAME_LENGTH:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME_LENGTH - len(purpose) - 10]}_{digest}_{purpose}"


def sibling_table_name(table_name: str, suffix: str) -> str:
    """
    Return the name of a table beside ``table_name`` (same schema): its name and ``suffix``, or when that is longer
    than 63 characters a cut name with a hash of the table's name.
    """
    schema, name = parse_table_name(table_name)
    full = name + suffix
    if len(full) > MAX_NAME_LENGTH:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        full = f"{name[: MAX_NAME_LENGTH - len(suffix) - 9]}_{digest}{suffix}"
    return f"{schema}.{full}" if schema else full
