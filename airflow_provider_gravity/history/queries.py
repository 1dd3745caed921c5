"""
Reading the run history and the dead letter for the Gravity view. This module does not import Airflow.

Per-day figures count the last try of each task instance (dag, task, run, map index): a retried try's
summary covers the whole window, so summing every try would count rows twice.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from airflow_provider_gravity.conversions.run.delivery_log import DELIVERY_LOG_COLUMNS
from airflow_provider_gravity.history.table import (
    COUNT_COLUMNS,
    COVERAGE_COLUMNS,
    JSON_COLUMNS,
    delivery_log_table,
    run_history_table,
)

#: Statuses of the delivery log that make up the dead letter.
DEAD_LETTER_STATUSES = ("rejected", "invalid")
TOP_REASONS = 10


class TableMissing(LookupError):
    """The table the query reads is not there (yet)."""


@dataclass(frozen=True)
class HistoryFilter:
    """
    Which rows a query reads.

    :param start_date: first day, inclusive.
    :param end_date: last day, inclusive.
    :param dag_id: only this DAG.
    :param task_id: only this task.
    :param permitted_dag_ids: the DAGs the reader may see; ``None`` for all of them.
    """

    start_date: date
    end_date: date
    dag_id: str | None = None
    task_id: str | None = None
    permitted_dag_ids: frozenset[str] | None = None


class HistoryReader:
    """
    Queries of the view on the run history table and, for the dead letter, the delivery log beside it.

    :param engine: engine of the database holding both tables.
    :param history_table: name of the run history table (``table`` or ``schema.table``).
    :param delivery_log_table: name of the delivery log table, or ``None`` when there is none.
    """

    def __init__(self, engine: Engine, history_table: str, delivery_log_table_name: str | None = None) -> None:
        self.engine = engine
        self.history_table_name = history_table
        self.history = run_history_table(history_table)
        self.delivery_log_table_name = delivery_log_table_name
        self.delivery_log = delivery_log_table(delivery_log_table_name) if delivery_log_table_name else None

    # -- runs ---------------------------------------------------------------------------------------

    def dag_ids(self) -> set[str]:
        """Every DAG with a row in the history."""
        with self._connect(self.history) as connection:
            return set(connection.scalars(sa.select(self.history.c.dag_id).distinct()))

    def tasks(self, where: HistoryFilter) -> list[dict[str, str]]:
        """The ``(dag_id, task_id)`` pairs with runs in the range, ignoring the DAG and task filters."""
        table = self.history
        unfiltered = HistoryFilter(where.start_date, where.end_date, permitted_dag_ids=where.permitted_dag_ids)
        statement = (
            sa.select(table.c.dag_id, table.c.task_id)
            .where(*self._history_conditions(unfiltered))
            .distinct()
            .order_by(table.c.dag_id, table.c.task_id)
        )
        with self._connect(table) as connection:
            return [{"dag_id": dag_id, "task_id": task_id} for dag_id, task_id in connection.execute(statement)]

    def runs(self, where: HistoryFilter, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """One entry per try, newest first, and how many tries match in all."""
        table = self.history
        conditions = self._history_conditions(where)
        with self._connect(table) as connection:
            total = connection.scalar(sa.select(sa.func.count()).select_from(table).where(*conditions))
            rows = connection.execute(
                sa.select(table)
                .where(*conditions)
                .order_by(table.c.day.desc(), table.c.recorded_at.desc(), table.c.id.desc())
                .limit(limit)
                .offset(offset)
            ).mappings()
            return [_run_entry(row) for row in rows], int(total or 0)

    def daily(self, where: HistoryFilter) -> list[dict[str, Any]]:
        """Per day with a run: the buckets summed and the match-key coverage of the events sent that day."""
        table = self.history
        latest = self._latest_tries(where)
        sums = [sa.func.sum(table.c[name]).label(name) for name in COUNT_COLUMNS]
        # Coverage is a share of each try's events: weigh it by them to get the day's share.
        weighted = [
            sa.func.sum(table.c[column] * table.c.events_sent).label(column) for column in COVERAGE_COLUMNS.values()
        ]
        statement = (
            sa.select(table.c.day, sa.func.count().label("runs"), *sums, *weighted)
            .where(table.c.id.in_(latest))
            .group_by(table.c.day)
            .order_by(table.c.day)
        )
        with self._connect(table) as connection:
            rows = connection.execute(statement).mappings().all()
        days = []
        for row in rows:
            sent = int(row["events_sent"] or 0)
            entry: dict[str, Any] = {"day": _day_text(row["day"]), "runs": int(row["runs"])}
            entry.update({name: int(row[name] or 0) for name in COUNT_COLUMNS})
            entry["match_key_coverage"] = {
                key: round(float(row[column] or 0) / sent, 4) if sent else 0.0
                for key, column in COVERAGE_COLUMNS.items()
            }
            days.append(entry)
        return days

    def top_reasons(self, where: HistoryFilter, count: int = TOP_REASONS) -> list[dict[str, Any]]:
        """The most frequent refusal reasons: local (``invalid``) and Gravity's (``rejected``), by rows."""
        table = self.history
        statement = sa.select(table.c.invalid_reasons, table.c.rejected_errors).where(
            table.c.id.in_(self._latest_tries(where))
        )
        totals: Counter[tuple[str, str]] = Counter()
        with self._connect(table) as connection:
            for invalid_reasons, rejected_errors in connection.execute(statement):
                for kind, text in (("invalid", invalid_reasons), ("rejected", rejected_errors)):
                    for reason, rows in _json_dict(text).items():
                        totals[(kind, reason)] += int(rows)
        ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:count]
        return [{"kind": kind, "reason": reason, "rows": rows} for (kind, reason), rows in ranked]

    # -- dead letter --------------------------------------------------------------------------------

    def dead_letter(
        self, where: HistoryFilter, *, status: str | None, event_name: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """
        Events the delivery log holds as ``rejected`` or ``invalid``, last recorded in the date range, newest
        first. Filtered by DAG, by task or to the DAGs the reader may see, only events whose last run wrote
        history for them are listed: the delivery log itself does not know DAGs.
        """
        if self.delivery_log is None:
            raise TableMissing("No delivery log table is configured ([gravity] delivery_log_table).")
        log_table = self.delivery_log
        start, end = _day_bounds(where)
        statuses = [status] if status else list(DEAD_LETTER_STATUSES)
        conditions: list[Any] = [
            log_table.c.status.in_(statuses),
            log_table.c.last_recorded_at >= start,
            log_table.c.last_recorded_at < end,
        ]
        if event_name:
            conditions.append(log_table.c.event_name == event_name)
        if where.dag_id or where.task_id or where.permitted_dag_ids is not None:
            conditions.append(log_table.c.last_run_id.in_(self._run_ids(where)))
        columns = [log_table.c[name] for name in DELIVERY_LOG_COLUMNS]
        with self._connect(log_table) as connection:
            total = connection.scalar(sa.select(sa.func.count()).select_from(log_table).where(*conditions))
            rows = connection.execute(
                sa.select(*columns)
                .where(*conditions)
                .order_by(log_table.c.last_recorded_at.desc(), log_table.c.event_name, log_table.c.event_id)
                .limit(limit)
                .offset(offset)
            ).mappings()
            return [_dead_letter_entry(row) for row in rows], int(total or 0)

    # -- helpers ------------------------------------------------------------------------------------

    def _history_conditions(self, where: HistoryFilter, *, by_day: bool = True) -> list[Any]:
        table = self.history
        conditions: list[Any] = []
        if by_day:
            conditions += [table.c.day >= where.start_date, table.c.day <= where.end_date]
        if where.dag_id:
            conditions.append(table.c.dag_id == where.dag_id)
        if where.task_id:
            conditions.append(table.c.task_id == where.task_id)
        if where.permitted_dag_ids is not None:
            conditions.append(table.c.dag_id.in_(sorted(where.permitted_dag_ids) or [""]))
        return conditions

    def _latest_tries(self, where: HistoryFilter) -> sa.Select:
        table = self.history
        return (
            sa.select(sa.func.max(table.c.id))
            .where(*self._history_conditions(where))
            .group_by(table.c.dag_id, table.c.task_id, table.c.run_id, table.c.map_index)
        )

    def _run_ids(self, where: HistoryFilter) -> sa.Select:
        table = self.history
        return sa.select(table.c.run_id).where(*self._history_conditions(where, by_day=False)).distinct()

    def _connect(self, table: sa.Table) -> _CheckedConnection:
        return _CheckedConnection(self.engine, table)


class _CheckedConnection:
    """A connection that first makes sure its table is there, raising :class:`TableMissing` when it is not."""

    def __init__(self, engine: Engine, table: sa.Table) -> None:
        self.engine = engine
        self.table = table
        self.connection: Connection | None = None

    def __enter__(self) -> Connection:
        self.connection = self.engine.connect()
        try:
            exists = sa.inspect(self.connection).has_table(self.table.name, schema=self.table.schema)
        except Exception:
            self.connection.close()
            raise
        if not exists:
            self.connection.close()
            name = f"{self.table.schema}.{self.table.name}" if self.table.schema else self.table.name
            raise TableMissing(f"Table {name} does not exist (yet).")
        return self.connection

    def __exit__(self, *exc_info: object) -> None:
        if self.connection is not None:
            self.connection.close()


def _run_entry(row: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": int(row["id"]),
        "dag_id": row["dag_id"],
        "task_id": row["task_id"],
        "map_index": int(row["map_index"]),
        "run_id": row["run_id"],
        "try_number": int(row["try_number"]),
        "day": _day_text(row["day"]),
        "data_interval_start": _moment_text(row["data_interval_start"]),
        "data_interval_end": _moment_text(row["data_interval_end"]),
        "recorded_at": _moment_text(row["recorded_at"]),
        "outcome": row["outcome"],
        "failure": row["failure"],
    }
    entry.update({name: int(row[name]) for name in COUNT_COLUMNS})
    entry.update(
        requests=int(row["requests"]),
        retries=int(row["retries"]),
        error_rate=float(row["error_rate"]),
        seconds=float(row["seconds"]),
        rows_per_second=float(row["rows_per_second"]),
        match_key_coverage={key: float(row[column]) for key, column in COVERAGE_COLUMNS.items()},
    )
    entry.update({name: _json_dict(row[name]) for name in JSON_COLUMNS})
    return entry


def _dead_letter_entry(row: Any) -> dict[str, Any]:
    entry = {name: row[name] for name in DELIVERY_LOG_COLUMNS}
    entry["attempts"] = int(entry["attempts"] or 0)
    entry["first_recorded_at"] = _moment_text(entry["first_recorded_at"])
    entry["last_recorded_at"] = _moment_text(entry["last_recorded_at"])
    return entry


def _json_dict(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _day_bounds(where: HistoryFilter) -> tuple[datetime, datetime]:
    start = datetime.combine(where.start_date, time(), tzinfo=UTC)
    return start, datetime.combine(where.end_date + timedelta(days=1), time(), tzinfo=UTC)


def _day_text(value: date | str) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)[:10]


def _moment_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
