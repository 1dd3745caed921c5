"""Warehouse tables of seeded orders, in the real PostgreSQL and in SQLite, and the SQL that reads them."""

from __future__ import annotations

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
