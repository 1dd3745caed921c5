"""Engines for the provider's tables: one whose MySQL/MariaDB connections speak utf8mb4, and its binary collation."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect, Engine

#: Table options of every table the provider creates on MySQL and MariaDB: InnoDB (row locks, transactions) and
#: utf8mb4, so that any text a key or a message holds can be stored.
UTF8MB4_TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mariadb_engine": "InnoDB",
    "mariadb_charset": "utf8mb4",
}


def with_full_unicode(engine: Engine) -> Engine:
    """
    Return the engine, or on MySQL/MariaDB one whose connections speak ``utf8mb4``: with ``utf8`` (3 bytes) or
    ``latin1``, an id holding an emoji would fail the write instead of being logged, and a filter of the view
    holding one would be refused instead of compared.
    """
    if engine.dialect.name not in ("mysql", "mariadb") or engine.url.query.get("charset") == "utf8mb4":
        return engine
    return sa.create_engine(engine.url.update_query_dict({"charset": "utf8mb4"}))


def mysql_binary_collation(dialect: Dialect) -> str:
    """Return the ``utf8mb4`` collation that compares bytes and pads nothing on this MySQL or MariaDB server."""
    version = dialect.server_version_info or ()
    if getattr(dialect, "is_mariadb", False):
        return "utf8mb4_nopad_bin"
    if version >= (8,):
        return "utf8mb4_0900_bin"
    return "utf8mb4_bin"
