"""Warehouse tables of seeded orders, in the real PostgreSQL and in SQLite, and the SQL that reads them."""

from __future__ import annotations

import os
import sqlite3

import sqlalchemy as sa

ORDERS_DDL = """
CREATE TABLE {table} (
    order_id BIGINT, created_at TIMESTAMP, customer_id BIGINT, email TEXT, alt_email TEXT, phone TEXT,
    country TEXT, first_name TEXT, last_name TEXT, total NUMERIC(12, 2), currency TEXT
)"""
ORDER_COLUMNS = (
    "order_id, created_at, customer_id, email, alt_email, phone, country, first_name, last_name, total, currency"
)
SCALAR_SQL = """
SELECT order_id AS event_id, created_at AS event_time, email AS em, phone AS ph, first_name AS fn,
       last_name AS ln, customer_id AS external_id, country, total AS value, currency,
       CAST(order_id AS TEXT) AS order_id
FROM {table} ORDER BY order_id"""


def load_orders_postgres(engine: sa.Engine, table: str, orders: list[dict]) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(ORDERS_DDL.format(table=table))
        placeholders = ", ".join(f"%({c.strip()})s" for c in ORDER_COLUMNS.split(","))
        conn.exec_driver_sql(f"INSERT INTO {table} ({ORDER_COLUMNS}) VALUES ({placeholders})", orders)


def load_orders_sqlite(path: str, table: str, orders: list[dict]) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(ORDERS_DDL.format(table=table))
        names = [c.strip() for c in ORDER_COLUMNS.split(",")]
        rows = [
            tuple(str(o[n]) if n == "created_at" else float(o[n]) if n == "total" else o[n] for n in names)
            for o in orders
        ]
        conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(names))})", rows)


# MariaDB / MySQL: the same orders, in MariaDB's own types (DATETIME, DECIMAL, utf8mb4 text), and SQL it parses
# (it has no CAST(... AS TEXT); ``||`` is OR unless sql_mode says PIPES_AS_CONCAT).
MARIADB_URL = os.environ.get("GRAVITY_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
MARIADB_ORDERS_DDL = """
CREATE TABLE {table} (
    order_id BIGINT, created_at DATETIME, customer_id BIGINT, email TEXT, alt_email TEXT, phone TEXT,
    country TEXT, first_name TEXT, last_name TEXT, total DECIMAL(12, 2), currency TEXT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
MARIADB_SCALAR_SQL = SCALAR_SQL.replace("CAST(order_id AS TEXT)", "CAST(order_id AS CHAR)")
#: Four-byte UTF-8 (emoji, a CJK letter beyond the BMP) that MySQL's old ``utf8`` (utf8mb3) cannot store.
FOUR_BYTE_FIRST_NAME = "😀 Zoë 𠮷"


def load_orders_mariadb(engine: sa.Engine, table: str, orders: list[dict]) -> None:
    """Create ``table`` in MariaDB and insert ``orders`` (BIGINT ids, DATETIME, DECIMAL, utf8mb4 text)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(MARIADB_ORDERS_DDL.format(table=table))
        names = [c.strip() for c in ORDER_COLUMNS.split(",")]
        placeholders = ", ".join(f"%({name})s" for name in names)
        conn.exec_driver_sql(f"INSERT INTO {table} ({ORDER_COLUMNS}) VALUES ({placeholders})", orders)


def with_four_byte_text(orders: list[dict], every: int = 37) -> list[dict]:
    """
    The orders with emoji and accents in the first name and the email of every ``every``-th order id, so that
    a lossy charset (utf8mb3, latin1: ``?``) changes the hashes. Applied per id, so duplicates stay exact.
    """
    changed = []
    for order in orders:
        order = dict(order)
        if order["order_id"] % every == 0:
            order["first_name"] = FOUR_BYTE_FIRST_NAME
            order["email"] = f" Ünïcode.{order['order_id']}🛒@Exämple.com "
        changed.append(order)
    return changed


def load_sample_mariadb(engine: sa.Engine, tables: dict[str, list[tuple]]) -> None:
    """The demo's CRM and store tables (``demo.sample_data.generate``) in MariaDB: DATETIME, DECIMAL, utf8mb4."""
    from demo.sample_data import CRM_COLUMNS, CRM_TABLE, STORE_COLUMNS, STORE_TABLE

    mariadb_types = {"TIMESTAMP": "DATETIME", "NUMERIC(12, 2)": "DECIMAL(12, 2)"}
    with engine.begin() as conn:
        for table, columns in ((CRM_TABLE, CRM_COLUMNS), (STORE_TABLE, STORE_COLUMNS)):
            ddl = ", ".join(f"{name} {mariadb_types.get(kind, kind)}" for name, kind in columns.items())
            conn.exec_driver_sql(f"CREATE TABLE {table} ({ddl}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
            placeholders = ", ".join(["%s"] * len(columns))
            conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", tables[table])
