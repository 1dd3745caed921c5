"""
Creating and migrating the provider's tables while other writers may do the same: the table, the columns a
later version added, the indexes.

PostgreSQL can fail one of two concurrent ``CREATE TABLE IF NOT EXISTS`` with a unique violation on ``pg_type``,
other databases may report "already exists", and MySQL has no ``CREATE INDEX IF NOT EXISTS``: after an error
the object's existence is checked, and the change retried a few times.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from airflow_provider_gravity.storage.names import qualified_name
from airflow_provider_gravity.storage.retry import pause

CREATE_TABLE_ATTEMPTS = 4


@dataclass(frozen=True)
class TableRole:
    """
    What a table is, in the words of its errors and logs.

    :param subject: what it holds: ``"delivery log"``.
    :param noun: what a table without its columns is not: ``"a delivery log"``.
    :param option: the option that names the table: ``"delivery_log_table"``.
    :param logger: the logger of the module that owns the table, which tells each creation and migration.
    """

    subject: str
    noun: str
    option: str
    logger: logging.Logger


def ensure_table(engine: Engine, table: sa.Table, role: TableRole, *, added: Collection[str] = ()) -> None:
    """
    Create the table if missing, check that it has the table's columns, and migrate a table of an earlier
    version: each column of ``added`` it lacks and each index it lacks are added (additive changes; rows
    already there get NULL, or the column's server default, in a new column).

    :param added: columns a later version added; a table without them is migrated, not refused.
    :raises ValueError: if a table of that name exists without the table's other columns.
    """
    create_table(engine, table, role)
    present = check_columns(engine, table, role, added=added)
    for name in added:
        if name not in present:
            add = functools.partial(add_column, table=table, name=name)
            there = functools.partial(_has_column, table=table, name=name)
            _migrate(engine, table, role, f"column {name}", add, there)
    for index in sorted(table.indexes, key=lambda index: str(index.name)):
        create = functools.partial(_create_index, index=index)
        there = functools.partial(_has_index, table=table, name=index.name)
        _migrate(engine, table, role, f"index {index.name}", create, there)


def create_table(engine: Engine, table: sa.Table, role: TableRole) -> None:
    """Create the table (not its indexes) if missing, tolerating other writers creating it at the same time."""
    for attempt in range(1, CREATE_TABLE_ATTEMPTS + 1):
        try:
            with engine.begin() as connection:
                connection.execute(sa.schema.CreateTable(table, if_not_exists=True))
            return
        except DBAPIError as error:
            if table_exists(engine, table):
                role.logger.info(
                    "%s table %s was created concurrently; using it.", role.subject.capitalize(), qualified_name(table)
                )
                return
            if attempt == CREATE_TABLE_ATTEMPTS:
                raise
            role.logger.info(
                "Creating %s table %s failed (%s); retrying.",
                role.subject,
                qualified_name(table),
                type(error.orig).__name__,
            )
            pause(attempt)


def check_columns(engine: Engine, table: sa.Table, role: TableRole, *, added: Collection[str] = ()) -> set[str]:
    """
    Return the (lower-case) column names of the existing table.

    :raises ValueError: if it lacks a column of ``table`` other than those of ``added``.
    """
    with engine.connect() as connection:
        present = column_names(connection, table)
    missing = [column.name for column in table.columns if column.name not in present and column.name not in added]
    if missing:
        raise ValueError(
            f"Table {qualified_name(table)} exists but is not {role.noun}: missing columns {missing}. "
            f"Choose another {role.option}."
        )
    return present


def add_column(connection: Connection, table: sa.Table, name: str) -> None:
    """
    ``ALTER TABLE … ADD COLUMN`` for a column of ``table``: NULL in the rows already there or, for a NOT NULL
    column, its server default (SQL text such as ``"0"``).
    """
    column = table.c[name]
    preparer = connection.dialect.identifier_preparer
    kind = column.type.compile(dialect=connection.dialect)
    statement = f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {preparer.format_column(column)} {kind}"
    if not column.nullable:
        default = column.server_default
        if not isinstance(default, sa.DefaultClause) or not isinstance(default.arg, str):
            raise ValueError(f"Column {name} is NOT NULL: adding it needs a server default for the rows there.")
        statement += f" NOT NULL DEFAULT {default.arg}"
    connection.exec_driver_sql(statement)


def table_exists(engine: Engine, table: sa.Table) -> bool:
    """Whether the table is there."""
    with engine.connect() as connection:
        return sa.inspect(connection).has_table(table.name, schema=table.schema)


def column_names(connection: Connection, table: sa.Table) -> set[str]:
    """Return the lower-case names of the existing table's columns."""
    columns = sa.inspect(connection).get_columns(table.name, schema=table.schema)
    return {column["name"].lower() for column in columns}


def index_names(connection: Connection, table: sa.Table) -> set[str | None]:
    """Return the names of the existing table's indexes."""
    return {index["name"] for index in sa.inspect(connection).get_indexes(table.name, schema=table.schema)}


def _has_column(connection: Connection, table: sa.Table, name: str) -> bool:
    return name in column_names(connection, table)


def _has_index(connection: Connection, table: sa.Table, name: str | None) -> bool:
    return name in index_names(connection, table)


def _create_index(connection: Connection, index: sa.Index) -> None:
    connection.execute(sa.schema.CreateIndex(index))


def _migrate(
    engine: Engine,
    table: sa.Table,
    role: TableRole,
    what: str,
    change: Callable[[Connection], Any],
    done: Callable[[Connection], bool],
) -> None:
    """Make one additive change unless it is there; another writer making it at the same time is fine."""
    for attempt in range(1, CREATE_TABLE_ATTEMPTS + 1):
        with engine.connect() as connection:
            if done(connection):
                return
        try:
            with engine.begin() as connection:
                change(connection)
            role.logger.info("%s %s: added %s.", role.subject.capitalize(), qualified_name(table), what)
            return
        except DBAPIError as error:
            with engine.connect() as connection:
                if done(connection):
                    return
            if attempt == CREATE_TABLE_ATTEMPTS:
                raise
            role.logger.info(
                "Adding %s to %s failed (%s); retrying.", what, qualified_name(table), type(error.orig).__name__
            )
            pause(attempt)
