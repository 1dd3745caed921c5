"""
Reading the run history and the dead letter for the Gravity view. This module does not import Airflow.

Per-day figures count each task instance (dag, task, run, map index) once, by its last try (a retried try's
summary covers the whole window, so summing every try would count rows twice), with the rows its earlier tries
delivered counted as delivered: :mod:`.rollup`. They are read from the rollup tables the writer keeps, a few
rows a day, and computed from the history rows when no writer has filled those yet.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from airflow_provider_gravity.history.rollup import (
    COMPLETE_MARK,
    FIGURE_SOURCE_COLUMNS,
    SUM_COLUMNS,
    Figures,
    group_figures,
)
from airflow_provider_gravity.storage.ddl import column_names
from airflow_provider_gravity.storage.delivery_log_table import ADDED_COLUMNS, DELIVERY_LOG_COLUMNS, delivery_log_table
from airflow_provider_gravity.storage.run_history_tables import (
    COUNT_COLUMNS,
    COVERAGE_COLUMNS,
    JSON_COLUMNS,
    days_table,
    reasons_table,
    rollup_table_names,
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
        days_name, reasons_name = rollup_table_names(history_table)
        self.days = days_table(days_name)
        self.reasons = reasons_table(reasons_name)
        self._ready: bool | None = None

    # -- runs ---------------------------------------------------------------------------------------

    def dag_ids(self) -> set[str]:
        """Every DAG with a row in the history."""
        with self._connect(self.history) as connection:
            if self._rollup_ready(connection):
                days = self.days
                return set(connection.scalars(sa.select(days.c.dag_id).where(days.c.dag_id != "").distinct()))
            return set(connection.scalars(sa.select(self.history.c.dag_id).distinct()))

    def tasks(self, where: HistoryFilter) -> list[dict[str, str]]:
        """Return the ``(dag_id, task_id)`` pairs with runs in the range, ignoring the DAG and task filters."""
        unfiltered = HistoryFilter(where.start_date, where.end_date, permitted_dag_ids=where.permitted_dag_ids)
        with self._connect(self.history) as connection:
            table = self.days if self._rollup_ready(connection) else self.history
            statement = (
                sa.select(table.c.dag_id, table.c.task_id)
                .where(*self._conditions(table, unfiltered))
                .distinct()
                .order_by(table.c.dag_id, table.c.task_id)
            )
            return [{"dag_id": dag_id, "task_id": task_id} for dag_id, task_id in connection.execute(statement)]

    def runs(self, where: HistoryFilter, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """One entry per try, newest first, and how many tries match in all."""
        table = self.history
        conditions = self._conditions(table, where)
        with self._connect(table) as connection:
            if self._rollup_ready(connection):
                days = self.days
                count = sa.select(sa.func.sum(days.c.tries)).where(*self._conditions(days, where))
            else:
                count = sa.select(sa.func.count()).select_from(table).where(*conditions)
            total = connection.scalar(count)
            rows = connection.execute(
                sa.select(table)
                .where(*conditions)
                .order_by(table.c.day.desc(), table.c.recorded_at.desc(), table.c.id.desc())
                .limit(limit)
                .offset(offset)
            ).mappings()
            return [_run_entry(row) for row in rows], int(total or 0)

    def daily(self, where: HistoryFilter) -> list[dict[str, Any]]:
        """
        Per day with a run: the day figures of its task instances summed (those of each one's last try, with
        the rows its earlier tries delivered counted as delivered: :mod:`.rollup`), and the match-key coverage
        of the events sent that day.
        """
        with self._connect(self.history) as connection:
            if self._rollup_ready(connection):
                days = self.days
                statement = (
                    sa.select(days.c.day, *(sa.func.sum(days.c[name]).label(name) for name in SUM_COLUMNS))
                    .where(*self._conditions(days, where), days.c.runs > 0)
                    .group_by(days.c.day)
                    .order_by(days.c.day)
                )
                sums: dict[str, Any] = {_day_text(row["day"]): row for row in connection.execute(statement).mappings()}
            else:
                sums = {_day_text(day): figures.sums for day, figures in self._figures_by_day(connection, where)}
        entries = []
        for day, row in sorted(sums.items()):
            if not row.get("runs"):
                continue
            sent = int(row.get("events_sent") or 0)
            entry: dict[str, Any] = {"day": day, "runs": int(row["runs"])}
            entry.update({name: int(row.get(name) or 0) for name in COUNT_COLUMNS})
            entry["match_key_coverage"] = {
                key: round(float(row.get(column) or 0) / sent, 4) if sent else 0.0
                for key, column in COVERAGE_COLUMNS.items()
            }
            entries.append(entry)
        return entries

    def top_reasons(self, where: HistoryFilter, count: int = TOP_REASONS) -> list[dict[str, Any]]:
        """Return the most frequent refusal reasons: local (``invalid``) and Gravity's (``rejected``), by rows."""
        totals: Counter[tuple[str, str]] = Counter()
        with self._connect(self.history) as connection:
            if self._rollup_ready(connection):
                reasons = self.reasons
                rows = sa.func.sum(reasons.c.refused_rows)
                statement = (
                    sa.select(reasons.c.kind, sa.func.max(reasons.c.reason), rows)
                    .where(*self._conditions(reasons, where))
                    .group_by(reasons.c.kind, reasons.c.reason_sha256)
                    .having(rows > 0)
                )
                for kind, reason, total in connection.execute(statement):
                    totals[(kind, reason)] += int(total)
            else:
                for _day, figures in self._figures_by_day(connection, where):
                    totals.update(figures.reasons)
        ranked = sorted(((key, rows) for key, rows in totals.items() if rows > 0), key=lambda item: (-item[1], item[0]))
        return [{"kind": kind, "reason": reason, "rows": rows} for (kind, reason), rows in ranked[:count]]

    # -- dead letter --------------------------------------------------------------------------------

    def dead_letter(
        self, where: HistoryFilter, *, status: str | None, event_name: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """
        Events the delivery log holds as ``rejected`` or ``invalid``, last recorded in the date range, newest
        first, by the DAG and task the delivery log recorded with them (those of the run in ``last_run_id``).
        A row without a DAG (written before the delivery log recorded DAGs) is listed only to a reader of every
        DAG, and only without a DAG or task filter.
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
        with self._connect(log_table) as connection:
            knows_dags = _has_columns(connection, log_table, ("dag_id", "task_id"))
            filtered = where.dag_id or where.task_id or where.permitted_dag_ids is not None
            if filtered and not knows_dags:
                return [], 0  # no row of a table that records no DAG belongs to a known DAG
            if where.dag_id:
                conditions.append(log_table.c.dag_id == where.dag_id)
            if where.task_id:
                conditions.append(log_table.c.task_id == where.task_id)
            if where.permitted_dag_ids is not None:
                conditions.append(log_table.c.dag_id.in_(sorted(where.permitted_dag_ids) or [""]))
            names = [*DELIVERY_LOG_COLUMNS, *(ADDED_COLUMNS if knows_dags else ())]
            total = connection.scalar(sa.select(sa.func.count()).select_from(log_table).where(*conditions))
            rows = connection.execute(
                sa.select(*(log_table.c[name] for name in names))
                .where(*conditions)
                .order_by(log_table.c.last_recorded_at.desc(), log_table.c.event_name, log_table.c.event_id)
                .limit(limit)
                .offset(offset)
            ).mappings()
            return [_dead_letter_entry(row) for row in rows], int(total or 0)

    def dead_letter_dag_ids(self, where: HistoryFilter) -> set[str]:
        """Return the DAGs of the dead letter in the date range (a reader is asked about each, like the history's)."""
        if self.delivery_log is None:
            return set()
        log_table = self.delivery_log
        start, end = _day_bounds(where)
        with self._connect(log_table) as connection:
            if not _has_columns(connection, log_table, ("dag_id",)):
                return set()
            statement = (
                sa.select(log_table.c.dag_id)
                .where(
                    log_table.c.status.in_(list(DEAD_LETTER_STATUSES)),
                    log_table.c.last_recorded_at >= start,
                    log_table.c.last_recorded_at < end,
                    log_table.c.dag_id.is_not(None),
                )
                .distinct()
            )
            return set(connection.scalars(statement))

    # -- helpers ------------------------------------------------------------------------------------

    def _conditions(self, table: sa.Table, where: HistoryFilter) -> list[Any]:
        """Build the filter on a table of the history or of its rollup (which have ``day``, ``dag_id``, ``task_id``)."""
        conditions: list[Any] = [table.c.day >= where.start_date, table.c.day <= where.end_date]
        if table is not self.history:
            conditions.append(table.c.dag_id != "")  # not the rollup's mark of completeness
        if where.dag_id:
            conditions.append(table.c.dag_id == where.dag_id)
        if where.task_id:
            conditions.append(table.c.task_id == where.task_id)
        if where.permitted_dag_ids is not None:
            conditions.append(table.c.dag_id.in_(sorted(where.permitted_dag_ids) or [""]))
        return conditions

    def _rollup_ready(self, connection: Connection) -> bool:
        """Whether the rollup tables are there and hold the whole history (a writer filled them)."""
        if self._ready is None:
            inspector = sa.inspect(connection)
            tables_there = all(inspector.has_table(t.name, schema=t.schema) for t in (self.days, self.reasons))
            mark = [self.days.c[name] == value for name, value in COMPLETE_MARK.items()]
            self._ready = tables_there and bool(
                connection.scalar(sa.select(sa.func.count()).select_from(self.days).where(*mark))
            )
        return self._ready

    def _figures_by_day(self, connection: Connection, where: HistoryFilter) -> list[tuple[str, Figures]]:
        """Compute the day figures from the history rows themselves, for a history no writer has rolled up yet."""
        table = self.history
        statement = (
            sa.select(*(table.c[name] for name in FIGURE_SOURCE_COLUMNS))
            .where(*self._conditions(table, where))
            .order_by(table.c.dag_id, table.c.task_id, table.c.run_id, table.c.map_index, table.c.id)
        )
        by_day: dict[str, Figures] = {}
        rows = connection.execute(statement.execution_options(stream_results=True, yield_per=5000))
        for (day, _dag_id, _task_id), figures in group_figures(rows.mappings()).items():
            by_day.setdefault(_day_text(day), Figures()).add(figures)
        return sorted(by_day.items())

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


def _has_columns(connection: Connection, table: sa.Table, names: tuple[str, ...]) -> bool:
    present = column_names(connection, table)
    return all(name in present for name in names)


def _dead_letter_entry(row: Any) -> dict[str, Any]:
    entry = {name: row.get(name) for name in (*DELIVERY_LOG_COLUMNS, *ADDED_COLUMNS)}
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
