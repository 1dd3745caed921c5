"""
The run history's schema, declared once: the table of one row per task try with its run summary, and beside it
the two rollup tables of its day figures.

Counters and coverage have columns of their own, so that the view can sum them per day in SQL; the reasons,
field drops and the whole summary are JSON text. Like the delivery log it holds no PII: ids, counters,
reasons and timings only.
"""

from __future__ import annotations

import sqlalchemy as sa

from airflow_provider_gravity.conversions.match_keys import MATCH_KEYS
from airflow_provider_gravity.storage.engines import UTF8MB4_TABLE_OPTIONS
from airflow_provider_gravity.storage.names import index_name, parse_table_name, sibling_table_name
from airflow_provider_gravity.storage.sql_types import MAX_ID_LENGTH, UtcTimestamp

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


def run_history_table(table_name: str) -> sa.Table:
    """
    Define the run history table.

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
        # 1 when its writer added the row's figures to the rollup tables; added by a migration.
        sa.Column("rolled_up", sa.SmallInteger(), nullable=False, server_default="0"),
        schema=schema,
        **UTF8MB4_TABLE_OPTIONS,
    )
    # Index names are per schema on PostgreSQL: prefix them with the table's name. (The first three were named
    # before index_name was: a table name of over 50 characters makes them longer than 63.)
    sa.Index(f"ix_{name}_day", table.c.day)
    sa.Index(f"ix_{name}_dag_task_day", table.c.dag_id, table.c.task_id, table.c.day)
    sa.Index(f"ix_{name}_run", table.c.run_id)
    # Added by the migration: the tries of one task instance (the writer's rollup), the newest runs first (the
    # view's list of runs).
    sa.Index(index_name(name, "task_instance"), table.c.dag_id, table.c.task_id, table.c.run_id, table.c.map_index)
    sa.Index(index_name(name, "recent"), table.c.day, table.c.recorded_at, table.c.id)
    return table


def rollup_table_names(history_table: str) -> tuple[str, str]:
    """``(days, reasons)`` table names beside ``history_table`` (same schema), at most 63 characters each."""
    return sibling_table_name(history_table, "_days"), sibling_table_name(history_table, "_reasons")


def _day_keys() -> tuple[sa.Column[object], ...]:
    """Return the key the rollup tables share: a day, a DAG and a task."""
    return (
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("dag_id", sa.String(MAX_ID_LENGTH), primary_key=True),
        sa.Column("task_id", sa.String(MAX_ID_LENGTH), primary_key=True),
    )


def days_table(table_name: str, metadata: sa.MetaData | None = None) -> sa.Table:
    """Per ``(day, dag_id, task_id)``: the tries recorded and the day figures summed."""
    schema, name = parse_table_name(table_name)
    return sa.Table(
        name,
        metadata or sa.MetaData(),
        *_day_keys(),
        sa.Column("tries", sa.BigInteger(), nullable=False),
        *(sa.Column(column, sa.BigInteger(), nullable=False) for column in ("runs", *COUNT_COLUMNS)),
        *(sa.Column(column, sa.Double(), nullable=False) for column in COVERAGE_COLUMNS.values()),
        schema=schema,
        **UTF8MB4_TABLE_OPTIONS,
    )


def reasons_table(table_name: str, metadata: sa.MetaData | None = None) -> sa.Table:
    """Per ``(day, dag_id, task_id)`` and reason: the rows of the last tries refused for it."""
    schema, name = parse_table_name(table_name)
    return sa.Table(
        name,
        metadata or sa.MetaData(),
        *_day_keys(),
        sa.Column("kind", sa.String(16), primary_key=True),
        # Gravity's messages can be long: the key is their hash, the text is beside it.
        sa.Column("reason_sha256", sa.CHAR(64), primary_key=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("refused_rows", sa.BigInteger(), nullable=False),
        schema=schema,
        **UTF8MB4_TABLE_OPTIONS,
    )
