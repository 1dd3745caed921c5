"""Settings the Gravity DAGs in this folder share: schedule, params, default args, operator arguments.

Environment variables, read when the DAG files are parsed:

``GRAVITY_DAG_SCHEDULE``
    cron of the nightly DAG (default ``0 3 * * *``); each run sends the interval between two ticks.
``GRAVITY_DAG_TIMEZONE``
    time zone of that cron (default ``UTC``).
``GRAVITY_DAG_START_DATE``
    first interval a backfill may create (default ``2024-01-01``).
``GRAVITY_DAG_RETRIES``
    task retries (default 3, with exponential backoff); a retry resumes after the acknowledged part.
"""

from __future__ import annotations

import datetime as dt
import os

import pendulum
from airflow.sdk import Param
from gravity_window import DEFAULT_LOOKBACK_DAYS

from airflow_provider_gravity.conversions.match_keys import MATCH_KEYS

SCHEDULE = os.environ.get("GRAVITY_DAG_SCHEDULE", "0 3 * * *")
TIMEZONE = os.environ.get("GRAVITY_DAG_TIMEZONE", "UTC")
START_DATE = pendulum.parse(os.environ.get("GRAVITY_DAG_START_DATE", "2024-01-01"), tz=TIMEZONE)
#: The match-key floor of both tasks: an e-mail column emptied or renamed upstream fails the night instead of
#: delivering it green. The sample CRM rows carry an e-mail on ~87% of events, the till's on ~46% (a quarter are
#: anonymous walk-ins); a fifth is far under both and far over a collapsed column's few percent.
DEFAULT_MIN_MATCH_COVERAGE = {"em": 0.2}
#: Bounds how many scheduled runs send at once; a backfill has its own bound (`--max-active-runs`, default 10).
MAX_ACTIVE_RUNS = 3

DEFAULT_ARGS = {
    "owner": "marketing-data",
    "retries": int(os.environ.get("GRAVITY_DAG_RETRIES", "3")),
    "retry_delay": dt.timedelta(minutes=2),
    "retry_exponential_backoff": True,  # doubles the delay; Airflow 3.1 takes only a bool
    "max_retry_delay": dt.timedelta(minutes=30),
}

_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$"  # table names go into the SQL text
_CONN_ID = r"^[A-Za-z0-9_.-]+$"


def conversion_params() -> dict[str, Param]:
    """The params of both Gravity DAGs: connection ids, table names, and an optional explicit window."""
    return {
        "warehouse_conn_id": Param(
            "gravity_warehouse",
            type="string",
            pattern=_CONN_ID,
            description="SQL connection holding the CRM and store tables",
        ),
        "gravity_conn_id": Param(
            "gravity_default",
            type="string",
            pattern=_CONN_ID,
            description="Gravity connection (host = API base URL, password = API key)",
        ),
        "delivery_log_conn_id": Param(
            "", type="string", description="SQL connection of the delivery log; empty = the warehouse"
        ),
        "crm_table": Param("crm_conversions", type="string", pattern=_IDENTIFIER),
        "store_table": Param("store_transactions", type="string", pattern=_IDENTIFIER),
        "delivery_log_table": Param(
            "gravity_delivery_log",
            type=["null", "string"],
            pattern=f"^$|{_IDENTIFIER}",
            description="the delivery log (never sends a conversion twice); empty or null for none, which "
            "needs lookback_days 0",
        ),
        "lookback_days": Param(
            DEFAULT_LOOKBACK_DAYS,
            type="integer",
            minimum=0,
            description="days before the data interval read again, for rows that land late; the delivery log "
            "skips what was delivered. 0 for none",
        ),
        "min_match_coverage": Param(
            DEFAULT_MIN_MATCH_COVERAGE,
            type=["null", "object"],
            propertyNames={"enum": list(MATCH_KEYS)},
            additionalProperties={"type": "number", "minimum": 0, "maximum": 1},
            description="the least share of sent events each match key must cover (em, ph, fn_ln, external_id, "
            "click_id), checked on a first sample before sending and after the run; a night under it fails "
            "without retries. null or {} for no floor",
        ),
        "window_start": Param(
            None, type=["null", "string"], description="ISO-8601 start of an explicit window (naive = UTC)"
        ),
        "window_end": Param(None, type=["null", "string"], description="ISO-8601 exclusive end of an explicit window"),
        "dry_run": Param(False, type="boolean", description="read, validate and hash, but send nothing"),
    }


#: Operator arguments templated from the params above.
CONNECTION_ARGS = {
    "conn_id": "{{ params.warehouse_conn_id }}",
    "gravity_conn_id": "{{ params.gravity_conn_id }}",
    "delivery_log_conn_id": "{{ params.delivery_log_conn_id or params.warehouse_conn_id }}",
    "delivery_log_table": "{{ params.delivery_log_table or '' }}",
    "dry_run": "{{ params.dry_run }}",
    "min_match_coverage": "{{ params.min_match_coverage | tojson }}",
}
#: What each table sends: its SQL (relative to the DAG file) and the defaults for rows without them.
CRM_ARGS = {"sql": "sql/crm_conversions.sql", "event_name": "Lead", "action_source": "system_generated"}
STORE_ARGS = {"sql": "sql/store_purchases.sql", "event_name": "Purchase", "action_source": "physical_store"}
