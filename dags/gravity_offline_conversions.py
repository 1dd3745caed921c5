"""
### Gravity offline conversions, nightly

Sends the conversions that happened off the website to Gravity's Conversions API, one data
interval per run:

* `send_crm_conversions` — CRM leads, sign-ups and phone orders (`sql/crm_conversions.sql`);
* `send_store_purchases` — in-store purchases with their line items (`sql/store_purchases.sql`).

Each run selects the rows of `[data_interval_start - lookback_days, data_interval_end)` (UTC; 2 days
of lookback by default, for rows that land late), sends them with `SendConversionsOperator` and records
every event in the delivery log table, so that the lookback, a re-run or a backfill weeks later never
counts a conversion twice (Gravity itself only deduplicates for 48 hours).

**Schedule.** The cron comes from `GRAVITY_DAG_SCHEDULE` (default `0 3 * * *`) and its time zone from
`GRAVITY_DAG_TIMEZONE` (default `UTC`), read when the DAG file is parsed. Each interval runs from one
cron tick to the next, so the default sends 03:00 → 03:00 and runs right after the window closes;
use `0 0 * * *` for calendar days.

**Params** (defaults in brackets): `warehouse_conn_id` [`gravity_warehouse`], `gravity_conn_id`
[`gravity_default`], `delivery_log_conn_id` [empty: the warehouse], `crm_table` [`crm_conversions`],
`store_table` [`store_transactions`], `delivery_log_table` [`gravity_delivery_log`], and
`window_start` / `window_end` to send an explicit period instead of the data interval, `dry_run`
[false] to read, validate and hash without sending, `lookback_days` [2] to read that many days
before the data interval again, for rows that land late (the delivery log skips what was delivered;
refused when `delivery_log_table` is empty; 0 turns it off), and `min_match_coverage`
[`{"em": 0.2}`], the least share of events each match key must cover: a night whose e-mail column
collapsed fails before sending instead of being delivered green (null or `{}` for no floor).

**Assets.** Each task updates the asset `gravity://<host>/conversions/<event_name>` (`Lead` for
`send_crm_conversions`, `Purchase` for `send_store_purchases`; `<host>` is the Gravity connection's),
with an event only when the run delivered something new: schedule a downstream DAG on it, e.g.
`schedule=[Asset("gravity://api.trygravity.ai/conversions/Purchase")]`.

**Manual runs.** Trigger with a logical date (the last complete interval before it is sent), or set
`window_start` and `window_end`, e.g. `{"window_start": "2025-06-02T00:00:00Z", "window_end":
"2025-06-03T00:00:00Z"}`. A run with neither fails and says so; it never selects nothing silently.

**Backfill.** `airflow backfill create --dag-id gravity_offline_conversions --from-date 2025-06-01
--to-date 2025-06-30` creates one run per interval starting in that range; its `--max-active-runs`
(default 10, whatever the DAG's own `max_active_runs`) bounds how many run at once. Add
`--reprocess-behavior completed` to run again days that already succeeded: events already delivered are
skipped by the delivery log.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The helper modules beside this file are imported by name. Airflow puts only the bundle root on
# sys.path, so add this folder too: the DAGs then also work from a subfolder of the dags folder.
if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))

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

with DAG(
    dag_id="gravity_offline_conversions",
    description="Nightly: CRM conversions and in-store purchases to Gravity's Conversions API",
    schedule=CronDataIntervalTimetable(SCHEDULE, timezone=TIMEZONE),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=MAX_ACTIVE_RUNS,
    default_args=DEFAULT_ARGS,
    params=conversion_params(),
    user_defined_macros={"gravity_window": gravity_window},
    doc_md=__doc__,
    tags=["gravity", "conversions"],
) as dag:
    SendConversionsOperator(task_id="send_crm_conversions", **CRM_ARGS, **CONNECTION_ARGS)
    SendConversionsOperator(task_id="send_store_purchases", **STORE_ARGS, **CONNECTION_ARGS)
