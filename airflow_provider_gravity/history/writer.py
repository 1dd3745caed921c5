"""
Writing the run history: create the table when missing (also when several tasks create it at once) and add
one row per try, with its change to the per-day rollup the view reads (:mod:`.rollup`). A table of an earlier
version is migrated: a column and indexes added, the rollup filled from the rows already there. This module
does not import Airflow: it is handed a SQLAlchemy engine.
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
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from airflow_provider_gravity.conversions.run.delivery_log import _retry_transient
from airflow_provider_gravity.history.rollup import (
    COMPLETE_MARK,
    FIGURE_SOURCE_COLUMNS,
    SUM_COLUMNS,
    Figures,
    day_figures,
    days_table,
    group_figures,
    reason_key,
    reasons_table,
    rollup_table_names,
)
from airflow_provider_gravity.history.table import (
    ADDED_COLUMNS,
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
        days_name, reasons_name = rollup_table_names(table_name)
        self.days = days_table(days_name)
        self.reasons = reasons_table(reasons_name)

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
            lambda: self._table_exists(),
            "table",
        )
        present = self._check_columns()
        for name in ADDED_COLUMNS:
            if name not in present:
                self._create(
                    lambda connection, name=name: self._add_column(connection, name),
                    lambda name=name: name in self._column_names(),
                    f"column {name}",
                )
        for index in sorted(self.table.indexes, key=lambda index: cast(str, index.name)):  # every index is named
            self._create(
                lambda connection, index=index: self._create_index(connection, index),
                lambda index=index: self._index_exists(index.name),
                f"index {index.name}",
            )
        for rollup in (self.days, self.reasons):
            self._create(
                lambda connection, rollup=rollup: connection.execute(sa.schema.CreateTable(rollup, if_not_exists=True)),
                lambda rollup=rollup: self._table_exists(rollup),
                f"table {rollup.name}",
            )
        self._fill_rollup()

    def record(self, identity: RunIdentity, summary: Mapping[str, Any], outcome: str, failure: str | None) -> None:
        """
        Add the row of one try, and its change to the rollup tables, in one transaction.

        :param identity: which try.
        :param summary: the run summary the operator returns (it holds no PII).
        :param outcome: one of :data:`~airflow_provider_gravity.history.table.OUTCOMES`.
        :param failure: why the try failed, as the task log says it; ``None`` on success.
        """
        row = history_row(identity, summary, outcome, failure, recorded_at=datetime.now(UTC))
        row["rolled_up"] = 1
        _retry_transient(lambda: self._record(row))

    def _record(self, row: dict[str, Any]) -> None:
        table = self.table
        with self.engine.begin() as connection:
            # First lock the day's rollup row (adding nothing): two tries of one task instance written at once
            # (Airflow runs them one after the other, a test may not) then see each other's row below.
            group = {"day": row["day"], "dag_id": row["dag_id"], "task_id": row["task_id"]}
            zeros = {name: 0 for name in ("tries", *SUM_COLUMNS)}
            _upsert_adding(connection, self.days, [{**group, **zeros}], tuple(group), ("tries",))
            connection.execute(sa.insert(table), row)
            instance = [table.c[name] == row[name] for name in ("dag_id", "task_id", "run_id", "map_index")]
            tries = (
                connection.execute(
                    sa.select(*(table.c[name] for name in FIGURE_SOURCE_COLUMNS)).where(*instance).order_by(table.c.id)
                )
                .mappings()
                .all()
            )
            changes: dict[tuple[date, str, str], Figures] = {}
            if len(tries) > 1:
                before_day, before = day_figures(tries[:-1])
                changes.setdefault((before_day, row["dag_id"], row["task_id"]), Figures()).add(before, -1)
            after_day, after = day_figures(tries)
            changes.setdefault((after_day, row["dag_id"], row["task_id"]), Figures()).add(after)
            recorded = changes.setdefault((row["day"], row["dag_id"], row["task_id"]), Figures())
            recorded.sums["tries"] = recorded.sums.get("tries", 0) + 1
            self._add_to_rollup(connection, changes)

    def _fill_rollup(self) -> None:
        """
        Fill the rollup tables from the rows already in the history, once: the first writer that finds them
        without their mark of completeness adds the figures of every row no writer has added (``rolled_up`` 0),
        and the mark, in one transaction; a writer that loses the race for the mark leaves it to the winner.
        """
        mark = [self.days.c[name] == value for name, value in COMPLETE_MARK.items()]
        with self.engine.connect() as connection:
            if connection.scalar(sa.select(sa.func.count()).select_from(self.days).where(*mark)):
                return
        table = self.table
        zeros = {name: 0 for name in ("tries", *SUM_COLUMNS)}
        try:
            with self.engine.begin() as connection:
                connection.execute(sa.insert(self.days), {**COMPLETE_MARK, **zeros})
                statement = (
                    sa.select(*(table.c[name] for name in FIGURE_SOURCE_COLUMNS))
                    .where(table.c.rolled_up == 0)
                    .order_by(table.c.dag_id, table.c.task_id, table.c.run_id, table.c.map_index, table.c.id)
                )
                rows = connection.execute(statement.execution_options(stream_results=True, yield_per=5000))
                groups = group_figures(rows.mappings())
                self._add_to_rollup(connection, groups)
        except IntegrityError:
            log.info("Run history %s: another writer fills the rollup tables.", self.table_name)
            return
        if groups:
            log.info("Run history %s: rollup tables filled from %d existing days.", self.table_name, len(groups))

    def _add_to_rollup(self, connection: Connection, changes: Mapping[tuple[date, str, str], Figures]) -> None:
        """Add each group's change to its rows, creating them when missing; in key order (a stable lock order)."""
        day_rows = []
        reason_rows = []
        for (day, dag_id, task_id), change in sorted(changes.items()):
            sums = {name: change.sums.get(name, 0) for name in ("tries", *SUM_COLUMNS)}
            day_rows.append({"day": day, "dag_id": dag_id, "task_id": task_id, **_typed(sums)})
            for (kind, reason), refused in sorted(change.reasons.items()):
                if refused:
                    reason_rows.append(
                        {
                            "day": day,
                            "dag_id": dag_id,
                            "task_id": task_id,
                            "kind": kind,
                            "reason_sha256": reason_key(reason),
                            "reason": reason,
                            "refused_rows": refused,
                        }
                    )
        for rollup, rows, keys, added in (
            (self.days, day_rows, ("day", "dag_id", "task_id"), ("tries", *SUM_COLUMNS)),
            (self.reasons, reason_rows, ("day", "dag_id", "task_id", "kind", "reason_sha256"), ("refused_rows",)),
        ):
            if rows:
                _upsert_adding(connection, rollup, rows, keys, added)

    def _add_column(self, connection: sa.Connection, name: str) -> None:
        column = self.table.c[name]
        preparer = connection.dialect.identifier_preparer
        kind = column.type.compile(dialect=connection.dialect)
        connection.exec_driver_sql(
            f"ALTER TABLE {preparer.format_table(self.table)} ADD COLUMN {preparer.format_column(column)} {kind} "
            "NOT NULL DEFAULT 0"
        )

    def _column_names(self) -> set[str]:
        with self.engine.connect() as connection:
            columns = sa.inspect(connection).get_columns(self.table.name, self.table.schema)
        return {column["name"].lower() for column in columns}

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

    def _table_exists(self, table: sa.Table | None = None) -> bool:
        table = self.table if table is None else table
        with self.engine.connect() as connection:
            return sa.inspect(connection).has_table(table.name, schema=table.schema)

    def _index_exists(self, name: str) -> bool:
        with self.engine.connect() as connection:
            return name in self._index_names(connection)

    def _index_names(self, connection: sa.Connection) -> set[str | None]:
        return {index["name"] for index in sa.inspect(connection).get_indexes(self.table.name, self.table.schema)}

    def _check_columns(self) -> set[str]:
        present = self._column_names()
        missing = [column.name for column in self.table.columns if column.name not in (*present, *ADDED_COLUMNS)]
        if missing:
            raise ValueError(
                f"Table {self.table_name} exists but is not a run history table: missing columns {missing}. "
                "Choose another run_history_table."
            )
        return present


def _typed(sums: Mapping[str, float]) -> dict[str, Any]:
    return {name: value if name.startswith("coverage_") else int(value) for name, value in sums.items()}


def _upsert_adding(
    connection: Connection, table: sa.Table, rows: list[dict[str, Any]], keys: tuple[str, ...], added: tuple[str, ...]
) -> None:
    """Insert each row, or add its ``added`` values to the row of its ``keys`` that is there."""
    dialect = connection.dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = (postgresql_dialect if dialect == "postgresql" else sqlite_dialect).insert(table)
        statement: Any = insert.on_conflict_do_update(
            index_elements=[table.c[key] for key in keys],
            set_={name: table.c[name] + insert.excluded[name] for name in added},
        )
        if dialect == "postgresql":
            # With RETURNING, SQLAlchemy sends the rows as multi-row INSERTs; without, one row a round trip.
            statement = statement.returning(table.c[keys[0]])
        connection.execute(statement, rows).close()
    elif dialect in ("mysql", "mariadb"):
        insert = mysql_dialect.insert(table)
        connection.execute(
            insert.on_duplicate_key_update({name: table.c[name] + insert.inserted[name] for name in added}), rows
        )
    else:
        for row in rows:
            where = [table.c[key] == row[key] for key in keys]
            updated = connection.execute(
                sa.update(table).where(*where).values({name: table.c[name] + row[name] for name in added})
            )
            if not updated.rowcount:
                connection.execute(sa.insert(table), row)


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
