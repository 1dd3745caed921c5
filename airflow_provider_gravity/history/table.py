"""
The run history table: one row per try of a ``SendConversionsOperator`` task, with its run summary.

Counters and coverage have columns of their own, so that the view can sum them per day in SQL; the reasons,
field drops and the whole summary are JSON text. Like the delivery log it holds no PII: ids, counters,
reasons and timings only.

This module does not import Airflow.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from airflow_provider_gravity.conversions.match_keys import MATCH_KEYS
from airflow_provider_gravity.conversions.run.delivery_log import index_name
from airflow_provider_gravity.conversions.run.sql_types import UtcTimestamp

#: Airflow's own ``dag_id``, ``task_id`` and ``run_id`` columns hold 250 characters.
MAX_ID_LENGTH = 250
MAX_FAILURE_LENGTH = 1000
#: Row buckets of the summary that get a column, in the summary's order.
BUCKET_COLUMNS = ("delivered", "duplicate", "rejected", "invalid", "skipped_delivered", "undelivered")
#: Other counters of the summary that get a column.
COUNT_COLUMNS = ("rows_read", *BUCKET_COLUMNS, "events_sent", "attributed", "changed_since_delivery")
COVERAGE_COLUMNS = {key: f"coverage_{key}" for key in MATCH_KEYS}
#: The summary's dicts, stored as JSON text.
JSON_COLUMNS = ("invalid_reasons", "rejected_errors", "field_drops")
#: How a try ended: delivered what it could; left events undelivered (a retry helps); refused by Gravity or by
#: the column contract (a retry does not help); or more rejected and invalid rows than ``max_error_rate`` allows.
OUTCOMES = ("success", "incomplete", "refused", "error_rate")
#: Columns a table of an earlier version lacks, added by ``RunHistory.ensure_table``.
ADDED_COLUMNS = ("rolled_up",)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def parse_table_name(table_name: str) -> tuple[str | None, str]:
    """
    Validate a table name and split it into ``(schema, table)``.

    Only letters, digits and underscores (not starting with a digit, at most 63 characters a part), with one
    optional ``schema.`` prefix, so that the name can never carry SQL.

    :param table_name: ``table`` or ``schema.table``.
    :raises ValueError: when it is not such a name.
    """
    parts = table_name.split(".") if isinstance(table_name, str) else []
    if not 1 <= len(parts) <= 2 or not all(_IDENTIFIER.fullmatch(part) for part in parts):
        raise ValueError(
            f"Invalid table name {table_name!r}: use 'table' or 'schema.table', letters, digits and underscores "
            "only, not starting with a digit, at most 63 characters a part."
        )
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def run_history_table(table_name: str) -> sa.Table:
    """
    The run history table's definition.

    :param table_name: ``table`` or ``schema.table``.
    """
    schema, name = parse_table_name(table_name)
    metadata = sa.MetaData()
    table = sa.Table(
        name,
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("dag_id", sa.String(MAX_ID_LENGTH), nullable=False),
        sa.Column("task_id", sa.String(MAX_ID_LENGTH), nullable=False),
        sa.Column("map_index", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(MAX_ID_LENGTH), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        # The day the data is about: the date (UTC) of the data interval's start, else of recorded_at.
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("data_interval_start", UtcTimestamp(), nullable=True),
        sa.Column("data_interval_end", UtcTimestamp(), nullable=True),
        sa.Column("recorded_at", UtcTimestamp(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("failure", sa.String(MAX_FAILURE_LENGTH), nullable=True),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in COUNT_COLUMNS),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("error_rate", sa.Float(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("rows_per_second", sa.Float(), nullable=False),
        *(sa.Column(column, sa.Float(), nullable=False) for column in COVERAGE_COLUMNS.values()),
        *(sa.Column(name, sa.Text(), nullable=False) for name in JSON_COLUMNS),
        sa.Column("summary", sa.Text(), nullable=False),
        # 1 when its writer added the row's figures to the rollup tables (rollup.py); added by a migration.
        sa.Column("rolled_up", sa.SmallInteger(), nullable=False, server_default="0"),
        schema=schema,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mariadb_engine="InnoDB",
        mariadb_charset="utf8mb4",
    )
    # Index names are per schema on PostgreSQL: prefix them with the table's name.
    sa.Index(f"ix_{name}_day", table.c.day)
    sa.Index(f"ix_{name}_dag_task_day", table.c.dag_id, table.c.task_id, table.c.day)
    sa.Index(f"ix_{name}_run", table.c.run_id)
    # Added by the migration: the tries of one task instance (the writer's rollup), the newest runs first (the
    # view's list of runs).
    sa.Index(index_name(name, "task_instance"), table.c.dag_id, table.c.task_id, table.c.run_id, table.c.map_index)
    sa.Index(index_name(name, "recent"), table.c.day, table.c.recorded_at, table.c.id)
    return table


def delivery_log_table(table_name: str) -> sa.Table:
    """
    The columns of the delivery log that the view reads (its documented schema), to query an existing table.

    :param table_name: ``table`` or ``schema.table``.
    """
    schema, name = parse_table_name(table_name)
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("event_name", sa.String(255)),
        sa.Column("event_id", sa.String(255)),
        sa.Column("status", sa.String(16)),
        sa.Column("detail", sa.Text()),
        sa.Column("payload_sha256", sa.CHAR(64)),
        sa.Column("attempts", sa.Integer()),
        sa.Column("first_run_id", sa.String(MAX_ID_LENGTH)),
        sa.Column("last_run_id", sa.String(MAX_ID_LENGTH)),
        sa.Column("first_recorded_at", UtcTimestamp()),
        sa.Column("last_recorded_at", UtcTimestamp()),
        # Added by the migration of DeliveryLog.ensure_table: a table no writer has migrated yet lacks them.
        sa.Column("dag_id", sa.String(MAX_ID_LENGTH)),
        sa.Column("task_id", sa.String(MAX_ID_LENGTH)),
        schema=schema,
    )
