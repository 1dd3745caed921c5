"""
### Gravity offline conversions, sharded (scale-out example)

The same window and SQL as `gravity_offline_conversions`, split into `GRAVITY_DAG_SHARDS` (default 4)
hash shards with dynamic task mapping: mapped task *i* selects only the rows whose integer id
modulo the shard count is *i* (the `params.shard_count` branch of `sql/*.sql`, written as
`abs(id) - abs(id) / n * n` with integer division: it means the same on PostgreSQL and SQLite and has
no `%`, which psycopg would read as a placeholder). The shards are disjoint and together cover the
window, so the DAG delivers exactly the events the unsharded DAG would.

Why: each mapped task reads only its shard with a streaming cursor and holds one chunk of rows and at
most `2 × max_concurrency` batches, so memory per worker stays bounded however large the window;
on the Celery or Kubernetes executor the shards run on different workers, and the delivery log
(safe for concurrent writers) keeps re-runs idempotent. Pick the shard count so that one shard of
one window is what one worker sends in reasonable time; `max_active_tis_per_dagrun` caps how many
shards of one run hit the API at once. An index on the time column keeps each shard's scan cheap.

Params (the lookback and the match-key floor included; the floor is checked per shard), schedule
(`GRAVITY_DAG_SCHEDULE`, `GRAVITY_DAG_TIMEZONE`), backfill and assets work as in
`gravity_offline_conversions` (each shard that delivers something adds its own event to its task's
asset); run one of the two for a given warehouse, not both (with the same delivery log they would not
double count, but the second would only skip).
"""

from __future__ import annotations

import sys
from pathlib import Path

# The helper modules beside this file are imported by name. Airflow puts only the bundle root on
# sys.path, so add this folder too: the DAGs then also work from a subfolder of the dags folder.
if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))

import os

from airflow.sdk import DAG

try:  # Airflow 3.2+
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow 3.1
    from airflow.timetables.interval import CronDataIntervalTimetable
from gravity_dag_defaults import (
    CONNECTION_ARGS,
    CRM_ARGS,
    DEFAULT_ARGS,
    MAX_ACTIVE_RUNS,
    SCHEDULE,
    START_DATE,
    STORE_ARGS,
    TIMEZONE,
    conversion_params,
)
from gravity_window import gravity_window

from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator

SHARD_COUNT = int(os.environ.get("GRAVITY_DAG_SHARDS", "4"))
MAX_PARALLEL_SHARDS = int(os.environ.get("GRAVITY_DAG_MAX_PARALLEL_SHARDS", "8"))


def shard_params(shard_count: int) -> list[dict[str, int]]:
    """One params override per mapped task: its shard number and the shard count."""
    if shard_count < 1:
        raise ValueError(f"GRAVITY_DAG_SHARDS must be at least 1, got {shard_count}")
    return [{"shard": shard, "shard_count": shard_count} for shard in range(shard_count)]


with DAG(
    dag_id="gravity_offline_conversions_sharded",
    description="Scale-out example: one window split into hash shards with dynamic task mapping",
    # Same intervals as the nightly DAG, so that its runs and backfills select whole windows too.
    schedule=CronDataIntervalTimetable(SCHEDULE, timezone=TIMEZONE),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=MAX_ACTIVE_RUNS,
    default_args=DEFAULT_ARGS,
    params=conversion_params(),
    user_defined_macros={"gravity_window": gravity_window},
    doc_md=__doc__,
    tags=["gravity", "conversions", "example"],
) as dag:
    for task_id, task_args in (("send_crm_conversions", CRM_ARGS), ("send_store_purchases", STORE_ARGS)):
        SendConversionsOperator.partial(
            task_id=task_id,
            max_active_tis_per_dagrun=MAX_PARALLEL_SHARDS,
            map_index_template="shard {{ params.shard }}/{{ params.shard_count }}",
            **task_args,
            **CONNECTION_ARGS,
        ).expand(params=shard_params(SHARD_COUNT))
