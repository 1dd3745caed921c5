"""
Writing the run history: create the table when missing (also when several tasks create it at once) and add
one row per try. This module does not import Airflow: it is handed a SQLAlchemy engine.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from airflow_provider_gravity.history.table import (
    COUNT_COLUMNS,
    COVERAGE_COLUMNS,
    JSON_COLUMNS,
    MAX_FAILURE_LENGTH,
    MAX_ID_LENGTH,
    OUTCOMES,
    run_history_table,
)

log = logging.getLogger(__name__)

CREATE_ATTEMPTS = 4


@dataclass(frozen=True)
class RunIdentity:
    """
    Which task try a history row belongs to.

    :param dag_id: the DAG's id.
    :param task_id: the task's id.
    :param map_index: index of a mapped task instance, ``-1`` when not mapped.
    :param run_id: the DAG run's id.
    :param try_number: the try of the task instance.
    :param data_interval_start: start of the run's data interval, if it has one.
    :param data_interval_end: end of the run's data interval, if it has one.
    """

    dag_id: str
    task_id: str
    map_index: int
    run_id: str
    try_number: int
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None


class RunHistory:
    """
    The run history table on one database.

    :param engine: SQLAlchemy engine, e.g. from ``DbApiHook.get_sqlalchemy_engine()``.
    :param table_name: ``table`` or ``schema.table``; letters, digits and underscores only.
    """

    def __init__(self, engine: Engine, table_name: str) -> None:
        self.table = run_history_table(table_name)
        self.table_name = table_name
        self.engine = _with_full_unicode(engine)

    def ensure_table(self) -> None:
        """
        Create the table and its indexes if missing, tolerating other writers creating them at the same time.

        PostgreSQL can fail one of two concurrent ``CREATE TABLE IF NOT EXISTS`` with a unique violation on
        ``pg_type``, and MySQL has no ``CREATE INDEX IF NOT EXISTS``: after an error the object's existence is
        checked, and creation retried a few times.

        :raises ValueError: if a table of that name exists without the run history's columns.
        """
        self._create(
            lambda connection: connection.execute(sa.schema.CreateTable(self.table, if_not_exists=True)),
            self._table_exists,
            "table",
        )
        self._check_columns()
        for index in sorted(self.table.indexes, key=lambda index: cast(str, index.name)):  # every index is named
            self._create(
                lambda connection, index=index: self._create_index(connection, index),
                lambda index=index: self._index_exists(index.name),
                f"index {index.name}",
            )

    def record(self, identity: RunIdentity, summary: Mapping[str, Any], outcome: str, failure: str | None) -> None:
        """
        Add the row of one try.

        :param identity: which try.
        :param summary: the run summary the operator returns (it holds no PII).
        :param outcome: one of :data:`~airflow_provider_gravity.history.table.OUTCOMES`.
        :param failure: why the try failed, as the task log says it; ``None`` on success.
        """
        row = history_row(identity, summary, outcome, failure, recorded_at=datetime.now(UTC))
        with self.engine.begin() as connection:
            connection.execute(sa.insert(self.table), row)

    def _create(self, create: Any, exists: Any, what: str) -> None:
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                with self.engine.begin() as connection:
                    create(connection)
                return
            except DBAPIError as error:
                if exists():
                    log.info("Run history %s %s was created concurrently; using it.", what, self.table_name)
                    return
                if attempt == CREATE_ATTEMPTS:
                    raise
                log.info("Creating run history %s failed (%s); retrying.", what, type(error.orig).__name__)
                time.sleep(random.uniform(0, 0.05 * 2**attempt))

    def _create_index(self, connection: sa.Connection, index: sa.Index) -> None:
        if index.name not in self._index_names(connection):
            connection.execute(sa.schema.CreateIndex(index))

    def _table_exists(self) -> bool:
        with self.engine.connect() as connection:
            return sa.inspect(connection).has_table(self.table.name, schema=self.table.schema)

    def _index_exists(self, name: str) -> bool:
        with self.engine.connect() as connection:
            return name in self._index_names(connection)

    def _index_names(self, connection: sa.Connection) -> set[str | None]:
        return {index["name"] for index in sa.inspect(connection).get_indexes(self.table.name, self.table.schema)}

    def _check_columns(self) -> None:
        with self.engine.connect() as connection:
            inspector = sa.inspect(connection)
            present = {column["name"].lower() for column in inspector.get_columns(self.table.name, self.table.schema)}
        missing = [column.name for column in self.table.columns if column.name not in present]
        if missing:
            raise ValueError(
                f"Table {self.table_name} exists but is not a run history table: missing columns {missing}. "
                "Choose another run_history_table."
            )


def history_row(
    identity: RunIdentity,
    summary: Mapping[str, Any],
    outcome: str,
    failure: str | None,
    *,
    recorded_at: datetime,
) -> dict[str, Any]:
    """The row of one try: its identity, its summary's counters, coverage, reasons, and the summary as JSON."""
    if outcome not in OUTCOMES:
        raise ValueError(f"Unknown outcome {outcome!r}; expected one of {OUTCOMES}.")
    for label in ("dag_id", "task_id", "run_id"):
        value = getattr(identity, label)
        if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
            raise ValueError(f"{label} must be a non-empty string of at most {MAX_ID_LENGTH} characters.")
    coverage = summary.get("match_key_coverage") or {}
    row: dict[str, Any] = {
        "dag_id": identity.dag_id,
        "task_id": identity.task_id,
        "map_index": int(identity.map_index),
        "run_id": identity.run_id,
        "try_number": int(identity.try_number),
        "day": _day(identity.data_interval_start, recorded_at),
        "data_interval_start": identity.data_interval_start,
        "data_interval_end": identity.data_interval_end,
        "recorded_at": recorded_at,
        "outcome": outcome,
        "failure": failure[:MAX_FAILURE_LENGTH] if failure else None,
        "requests": int(summary.get("requests") or 0),
        "retries": int(summary.get("retries") or 0),
        "error_rate": float(summary.get("error_rate") or 0.0),
        "seconds": float(summary.get("seconds") or 0.0),
        "rows_per_second": float(summary.get("rows_per_second") or 0.0),
        "summary": _json(summary),
    }
    row.update({name: int(summary.get(name) or 0) for name in COUNT_COLUMNS})
    row.update({column: float(coverage.get(key) or 0.0) for key, column in COVERAGE_COLUMNS.items()})
    row.update({name: _json(summary.get(name) or {}) for name in JSON_COLUMNS})
    return row


def _day(interval_start: datetime | None, recorded_at: datetime) -> date:
    moment = interval_start or recorded_at
    return (moment.astimezone(UTC) if moment.tzinfo else moment).date()


def _json(value: Any) -> str:
    # ASCII-only JSON: any connection character set stores it unchanged.
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=True)


def _with_full_unicode(engine: Engine) -> Engine:
    """On MySQL/MariaDB, an engine whose connections speak ``utf8mb4``, as ids may hold any letter."""
    if engine.dialect.name not in ("mysql", "mariadb") or engine.url.query.get("charset") == "utf8mb4":
        return engine
    return sa.create_engine(engine.url.update_query_dict({"charset": "utf8mb4"}))
