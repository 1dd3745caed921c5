"""Column types the provider's own tables share: timestamps kept in UTC, case-sensitive keys, Airflow's ids."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.engine import Dialect

# The key columns are VARCHAR(MAX_KEY_LENGTH): two of 255 in utf8mb4 take 2,040 bytes, inside MySQL/MariaDB's
# 3,072-byte index limit.
from airflow_provider_gravity.conversions.read.columns import MAX_KEY_LENGTH
from airflow_provider_gravity.storage.engines import mysql_binary_collation

#: Airflow's own ``dag_id``, ``task_id`` and ``run_id`` columns hold 250 characters; the provider's tables too.
MAX_ID_LENGTH = 250


class UtcTimestamp(sa.types.TypeDecorator[datetime]):
    """Timestamp stored in UTC: ``timestamptz`` where the database has one, naive UTC on MySQL and SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql_dialect.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        if dialect.name in ("mysql", "mariadb", "sqlite"):
            value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class KeyString(sa.types.TypeDecorator[str]):
    """
    VARCHAR for key columns; on MySQL/MariaDB a binary no-pad collation, so ``AB1``, ``ab1`` and
    ``ab1 `` stay three different events instead of colliding under the default case-insensitive one."""

    impl = sa.String(MAX_KEY_LENGTH)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            collation = mysql_binary_collation(dialect)
            return dialect.type_descriptor(
                mysql_dialect.VARCHAR(MAX_KEY_LENGTH, charset="utf8mb4", collation=collation)
            )
        return dialect.type_descriptor(sa.String(MAX_KEY_LENGTH))
