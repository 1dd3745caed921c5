"""What the run history says a task's match-key coverage usually is: the median of its last successful runs."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from airflow_provider_gravity.storage.run_history_tables import COVERAGE_COLUMNS, run_history_table

#: Successful runs whose coverage makes the median.
BASELINE_RUNS = 7


@dataclass(frozen=True)
class CoverageBaseline:
    """
    The median match-key coverage of a task's last successful runs.

    :param medians: per match key (``em``, ``ph``, ...), the median share of sent events.
    :param runs: how many runs the medians are of (at most :data:`BASELINE_RUNS`).
    """

    medians: dict[str, float]
    runs: int


def coverage_baseline(
    engine: Engine,
    table_name: str,
    *,
    dag_id: str,
    task_id: str,
    map_index: int,
    before_run_id: str,
    runs: int = BASELINE_RUNS,
) -> CoverageBaseline:
    """
    Return the median coverage of the task instance's last ``runs`` successful runs that sent events, newest first by
    the time their success was recorded, the current run (``before_run_id``) left out. A run that succeeded
    twice (cleared and run again) counts once, with its latest success. No table yet gives no runs.

    :param engine: the run history's database.
    :param table_name: ``table`` or ``schema.table``.
    :param dag_id: the task's DAG.
    :param task_id: the task.
    :param map_index: the mapped task's index (``-1`` for a task that is not mapped).
    :param before_run_id: the run being checked, not part of its own baseline.
    :param runs: how many successful runs make the median.
    """
    table = run_history_table(table_name)
    if not sa.inspect(engine).has_table(table.name, schema=table.schema):
        return CoverageBaseline({}, 0)
    coverage = [table.c[column] for column in COVERAGE_COLUMNS.values()]
    query = (
        sa.select(table.c.run_id, *coverage)
        .where(
            table.c.dag_id == dag_id,
            table.c.task_id == task_id,
            table.c.map_index == map_index,
            table.c.outcome == "success",
            table.c.events_sent > 0,
            table.c.run_id != before_run_id,
        )
        .order_by(table.c.recorded_at.desc(), table.c.id.desc())
        # Enough rows to find `runs` distinct runs unless many runs were cleared and succeeded again.
        .limit(runs * 4)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    latest: dict[str, tuple[float, ...]] = {}
    for run_id, *shares in rows:
        if run_id not in latest and len(latest) < runs:
            latest[run_id] = tuple(float(share) for share in shares)
    if not latest:
        return CoverageBaseline({}, 0)
    medians = {key: median(shares[i] for shares in latest.values()) for i, key in enumerate(COVERAGE_COLUMNS)}
    return CoverageBaseline(medians, len(latest))
