"""
What ``SendConversionsOperator`` calls at the end of each try: the row of that try in its run history table.

The history only observes: whatever happens while writing it (a database down, a table of that name that is
something else) is logged as an error and never changes the task's outcome, which is about the conversions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_gravity.history.baseline import CoverageBaseline, coverage_baseline
from airflow_provider_gravity.history.writer import RunHistory, RunIdentity

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook

log = logging.getLogger(__name__)


class _HistoryOperator(Protocol):
    """What is read of the operator."""

    run_history_table: str | None
    run_history_conn_id: str | None
    delivery_log_conn_id: str | None

    def sql_hook_of(self, conn_id: str | None) -> DbApiHook: ...


class _Failure(Protocol):
    @property
    def message(self) -> str: ...

    @property
    def retryable(self) -> bool: ...


def record_run_history(
    operator: _HistoryOperator,
    context: Mapping[str, Any],
    summary: Mapping[str, Any],
    *,
    dry_run: bool,
    failure: _Failure | None,
    too_many_errors: bool,
) -> None:
    """
    Add this try's row to the operator's ``run_history_table``, creating the table when missing. Does nothing
    without a table or on a dry run; never raises.

    The table is on ``run_history_conn_id``, else on the delivery log's connection: ``delivery_log_conn_id``,
    else the operator's own SQL hook (``conn_id`` with its ``database`` and ``hook_params``).

    :param operator: the ``SendConversionsOperator``.
    :param context: the task's context.
    :param summary: the run summary.
    :param dry_run: whether nothing was sent.
    :param failure: why rows stayed undelivered (``message``, ``retryable``), or ``None``.
    :param too_many_errors: whether the error rate is above ``max_error_rate``.
    """
    table_name = operator.run_history_table
    if not table_name or dry_run:
        return
    if failure is not None:
        outcome, reason = ("incomplete" if failure.retryable else "refused"), failure.message
    elif too_many_errors:
        outcome, reason = "error_rate", f"error rate {summary.get('error_rate', 0):.2%} is above max_error_rate"
    else:
        outcome, reason = "success", None
    try:
        history = RunHistory(_history_hook(operator).get_sqlalchemy_engine(), table_name)
        try:
            history.ensure_table()
            history.record(run_identity(context), summary, outcome, reason)
        finally:
            history.engine.dispose()
    except Exception as error:  # noqa: BLE001 - the history must never fail a delivery that happened
        log.error(
            "Could not write the run history to %s (%s: %s); the run itself is not affected.",
            table_name,
            type(error).__name__,
            str(error).splitlines()[0][:300] if str(error) else "",
        )
        return
    log.info("Run history: one %s row added to %s.", outcome, table_name)


def read_coverage_baseline(operator: _HistoryOperator, context: Mapping[str, Any]) -> CoverageBaseline | None:
    """
    Read the median match-key coverage of the task's last successful runs, from its ``run_history_table``; ``None``
    without a table, or when it cannot be read (logged: the guard then checks the fixed floors only).
    """
    table_name = operator.run_history_table
    if not table_name:
        return None
    identity = run_identity(context)
    try:
        engine = _history_hook(operator).get_sqlalchemy_engine()
        try:
            return coverage_baseline(
                engine,
                table_name,
                dag_id=identity.dag_id,
                task_id=identity.task_id,
                map_index=identity.map_index,
                before_run_id=identity.run_id,
            )
        finally:
            engine.dispose()
    except Exception as error:  # noqa: BLE001 - the history only observes; the fixed floors still hold
        log.warning(
            "Could not read the coverage of earlier runs from %s (%s); max_coverage_drop is not checked this run.",
            table_name,
            type(error).__name__,
        )
        return None


def run_identity(context: Mapping[str, Any]) -> RunIdentity:
    """Return the identity of the try running in ``context``."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    return RunIdentity(
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        map_index=-1 if map_index is None else int(map_index),
        run_id=str(context.get("run_id") or ti.run_id),
        try_number=int(getattr(ti, "try_number", 1) or 1),
        data_interval_start=_moment(context.get("data_interval_start")),
        data_interval_end=_moment(context.get("data_interval_end")),
    )


def _moment(value: Any) -> datetime | None:
    # Pendulum's DateTime is a datetime; a plain one in UTC keeps the database drivers from meeting a subclass.
    if not isinstance(value, datetime):
        return None
    return datetime.fromtimestamp(value.timestamp(), tz=UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _history_hook(operator: _HistoryOperator) -> DbApiHook:
    # The operator makes and checks every SQL hook, with its hook_params.
    return operator.sql_hook_of(operator.run_history_conn_id or operator.delivery_log_conn_id)
