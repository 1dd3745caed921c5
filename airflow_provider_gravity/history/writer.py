"""
Writing the run history: create the table when missing (also when several tasks create it at once) and add
one row per try, with its change to the per-day rollup the view reads (:mod:`.rollup`). A table of an earlier
version is migrated: a column and indexes added, the rollup filled from the rows already there. This module
does not import Airflow: it is handed a SQLAlchemy engine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from airflow_provider_gravity.history.rollup import (
    COMPLETE_MARK,
    FIGURE_SOURCE_COLUMNS,
    SUM_COLUMNS,
    Figures,
    day_figures,
    group_figures,
    reason_key,
)
from airflow_provider_gravity.storage.ddl import TableRole, create_table, ensure_table
from airflow_provider_gravity.storage.engines import with_full_unicode
from airflow_provider_gravity.storage.retry import retry_transient
from airflow_provider_gravity.storage.run_history_tables import (
    ADDED_COLUMNS,
    COUNT_COLUMNS,
    COVERAGE_COLUMNS,
    JSON_COLUMNS,
    MAX_FAILURE_LENGTH,
    OUTCOMES,
    days_table,
    reasons_table,
    rollup_table_names,
    run_history_table,
)
from airflow_provider_gravity.storage.sql_types import MAX_ID_LENGTH

log = logging.getLogger(__name__)

_ROLE = TableRole("run history", "a run history table", "run_history_table", log)


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
        self.engine = with_full_unicode(engine)
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
        ensure_table(self.engine, self.table, _ROLE, added=ADDED_COLUMNS)
        for rollup in (self.days, self.reasons):
            create_table(self.engine, rollup, _ROLE)
        self._fill_rollup()

    def record(self, identity: RunIdentity, summary: Mapping[str, Any], outcome: str, failure: str | None) -> None:
        """
        Add the row of one try, and its change to the rollup tables, in one transaction.

        :param identity: which try.
        :param summary: the run summary the operator returns (it holds no PII).
        :param outcome: one of :data:`~airflow_provider_gravity.storage.run_history_tables.OUTCOMES`.
        :param failure: why the try failed, as the task log says it; ``None`` on success.
        """
        row = history_row(identity, summary, outcome, failure, recorded_at=datetime.now(UTC))
        row["rolled_up"] = 1
        retry_transient(lambda: self._record(row), subject="Run history", logger=log)

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
    """Build the row of one try: its identity, its summary's counters, coverage, reasons, and the summary as JSON."""
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
