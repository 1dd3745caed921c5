"""The delivery log's schema, declared once: its table, columns and indexes, and the lengths its values fit."""

from __future__ import annotations

import sqlalchemy as sa

from airflow_provider_gravity.storage.engines import UTF8MB4_TABLE_OPTIONS
from airflow_provider_gravity.storage.names import index_name, parse_table_name
from airflow_provider_gravity.storage.sql_types import MAX_ID_LENGTH, KeyString, UtcTimestamp

#: ``detail`` is cut to this many characters.
MAX_DETAIL_LENGTH = 1000
#: Columns added later, by ``DeliveryLog.ensure_table`` to a table that lacks them: the DAG and task of the run
#: in ``last_run_id`` (NULL in rows written before they were added: such a row's DAG is unknown).
ADDED_COLUMNS = ("dag_id", "task_id")


def delivery_log_table(table_name: str, schema: str | None = None) -> sa.Table:
    """
    Define the delivery log table.

    :param table_name: ``table`` or ``schema.table``.
    :param schema: schema of the table, if not given in ``table_name``.
    :raises ValueError: if the name is not a plain identifier (``parse_table_name``).
    """
    schema, table = parse_table_name(table_name, schema, subject="delivery log")
    built = sa.Table(
        table,
        sa.MetaData(),
        sa.Column("event_name", KeyString(), primary_key=True),
        sa.Column("event_id", KeyString(), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("payload_sha256", sa.CHAR(64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_run_id", sa.String(MAX_ID_LENGTH), nullable=False),
        sa.Column("last_run_id", sa.String(MAX_ID_LENGTH), nullable=False),
        sa.Column("first_recorded_at", UtcTimestamp(), nullable=False),
        sa.Column("last_recorded_at", UtcTimestamp(), nullable=False),
        sa.Column("dag_id", sa.String(MAX_ID_LENGTH), nullable=True),
        sa.Column("task_id", sa.String(MAX_ID_LENGTH), nullable=True),
        schema=schema,
        **UTF8MB4_TABLE_OPTIONS,
    )
    # What the dead letter of the Gravity view filters and orders on: status and time, then the DAG and task
    # (in the index, so that counting the events a reader may see needs no table row), per DAG first for a
    # reader of some DAGs or a ?dag_id= filter.
    sa.Index(
        index_name(table, "dead_letter"), built.c.status, built.c.last_recorded_at, built.c.dag_id, built.c.task_id
    )
    sa.Index(index_name(table, "dag_dead_letter"), built.c.dag_id, built.c.status, built.c.last_recorded_at)
    return built


#: The delivery log's first columns, in order: those every version had, which an existing table must have.
DELIVERY_LOG_COLUMNS = tuple(
    column.name for column in delivery_log_table("gravity_delivery_log").columns if column.name not in ADDED_COLUMNS
)
