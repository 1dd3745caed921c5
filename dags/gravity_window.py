"""The time window a Gravity conversions run selects, shared by the DAGs in this folder.

The SQL templates call ``{% set window = gravity_window() %}`` and compare their timestamp column
with ``window.start`` / ``window.end``: ``'YYYY-MM-DD HH:MM:SS'`` strings in UTC, which compare
correctly with a naive-UTC ``TIMESTAMP`` on PostgreSQL and with timestamp text on SQLite.

Where the window comes from, in order:

1. the run's params ``window_start`` and ``window_end`` (ISO-8601; naive values are UTC), for a
   manual run of an arbitrary period;
2. the run's data interval ``[data_interval_start, data_interval_end)``, for scheduled runs,
   backfills and manual runs triggered with a logical date, read from ``lookback_days`` (param,
   default :data:`DEFAULT_LOOKBACK_DAYS`, 2) days before its start, so that a row that
   landed in the warehouse after its night ran is sent by one of the next nights. The delivery log
   skips what earlier nights delivered (``skipped_delivered``), so a lookback needs one: without
   ``delivery_log_table`` it is refused.

A run with neither (a manual run without a logical date, or an empty interval) fails with a
message saying what to do, instead of silently selecting nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

import jinja2
import pendulum

from airflow_provider_gravity.exceptions import AirflowFailException

SQL_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
#: Days before a data interval that each run reads again, for rows that reach the warehouse late (POS syncs and
#: CRM qualification often land a day or two after the event).
DEFAULT_LOOKBACK_DAYS = 2


class Window(NamedTuple):
    """
    A half-open UTC window ``[start, end)`` rendered for SQL: ``start`` is where the read starts (the lookback
    included), ``night_start`` where the run's own period starts.
    """

    start: str
    end: str
    night_start: str


class WindowError(AirflowFailException, ValueError):
    """The run does not say which period to send: fail the task at once, a retry would not help."""


def _as_utc(value: Any, name: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = pendulum.parse(value, tz="UTC")
        except (ValueError, pendulum.parsing.exceptions.ParserError) as error:
            raise WindowError(f"param {name}={value!r} is not an ISO-8601 timestamp") from error
    if not isinstance(value, dt.datetime):
        raise WindowError(f"{name} must be a timestamp, got {type(value).__name__}")
    try:
        return pendulum.instance(value, tz="UTC").in_timezone("UTC")
    except OverflowError:  # 0001-01-01T00:00+01:00 is in the year 0 in UTC
        raise WindowError(f"{name}={value.isoformat()} is outside the years 1 to 9999 in UTC") from None


def resolve_window(
    *,
    params: dict[str, Any] | None,
    data_interval_start: dt.datetime | None,
    data_interval_end: dt.datetime | None,
    logical_date: dt.datetime | None,
) -> Window:
    """Return the run's window, or raise :class:`WindowError` explaining how to give one.

    :param params: the run's params; ``window_start`` and ``window_end`` win when both are set (an explicit
        window is read exactly, without lookback); ``lookback_days`` (``0`` for none) widens a data
        interval back, and needs ``delivery_log_table``.
    :param data_interval_start: the run's data interval start.
    :param data_interval_end: the run's data interval end.
    :param logical_date: the run's logical date; ``None`` for a manual run triggered without one.
    """
    params = params or {}
    lookback_days = 0
    explicit_start, explicit_end = params.get("window_start"), params.get("window_end")
    if explicit_start or explicit_end:
        if not (explicit_start and explicit_end):
            raise WindowError("give both window_start and window_end, or neither")
        start, end = _as_utc(explicit_start, "window_start"), _as_utc(explicit_end, "window_end")
        source = "params window_start/window_end"
    elif logical_date is None or data_interval_start is None or data_interval_end is None:
        raise WindowError(
            "this run has no logical date, so it has no data interval to send. Trigger it with a "
            "logical date (the interval before it is sent), or set the params window_start and "
            'window_end, e.g. {"window_start": "2025-06-02T00:00:00Z", "window_end": '
            '"2025-06-03T00:00:00Z"}.'
        )
    else:
        start = _as_utc(data_interval_start, "data_interval_start")
        end = _as_utc(data_interval_end, "data_interval_end")
        source = "the data interval"
        lookback_days = _lookback_days(params)
    if start >= end:
        raise WindowError(
            f"the window from {source} is empty or reversed ({start.isoformat()} to {end.isoformat()}); "
            "a schedule must give real data intervals (CronDataIntervalTimetable), or set the params "
            "window_start < window_end."
        )
    try:
        read_start = start - dt.timedelta(days=lookback_days)
    except OverflowError:
        raise WindowError(
            f"param lookback_days={lookback_days} reaches back before the year 1, where no timestamp is; "
            "give fewer days, or an explicit window_start and window_end"
        ) from None
    return Window(_sql_timestamp(read_start), _sql_timestamp(end), _sql_timestamp(start))


def _sql_timestamp(moment: dt.datetime) -> str:
    """
    ``moment`` as :data:`SQL_TIMESTAMP_FORMAT` with a four-digit year: ``strftime`` writes the year 3 as ``3``,
    which PostgreSQL reads as 2008-03-02 in ``3-02-08`` and which sorts after ``2026`` as SQLite compares text.
    """
    return f"{moment.year:04d}-{moment.strftime(SQL_TIMESTAMP_FORMAT.removeprefix('%Y-'))}"


def _lookback_days(params: dict[str, Any]) -> int:
    """The param ``lookback_days``, refused without a delivery log: only the log keeps a re-read from re-sending."""
    lookback_days = params.get("lookback_days", DEFAULT_LOOKBACK_DAYS)
    if lookback_days is None:
        return 0
    if isinstance(lookback_days, bool) or not isinstance(lookback_days, int) or lookback_days < 0:
        raise WindowError(f"param lookback_days must be a whole number of days, 0 or more, got {lookback_days!r}")
    if lookback_days and not params.get("delivery_log_table"):
        raise WindowError(
            f"param lookback_days={lookback_days} reads the {lookback_days} days before the window again, which "
            "only the delivery log keeps from being sent twice, but param delivery_log_table is empty: set "
            "delivery_log_table, or lookback_days to 0. Nothing was sent."
        )
    return lookback_days


@jinja2.pass_context
def gravity_window(context: jinja2.runtime.Context) -> Window:
    """Jinja macro: the window of the run being rendered (see :func:`resolve_window`)."""
    return resolve_window(
        params=context.get("params"),
        data_interval_start=context.get("data_interval_start"),
        data_interval_end=context.get("data_interval_end"),
        logical_date=context.get("logical_date"),
    )
