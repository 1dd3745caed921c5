"""Operator that sends the rows of a SQL query to Gravity's Conversions API as offline conversions."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.providers.common.sql.operators.sql import BaseSQLOperator

from airflow_provider_gravity.assets import conversions_alias, conversions_asset, convert_asset_to_openlineage
from airflow_provider_gravity.conversions.api.client import MAX_EVENTS_PER_REQUEST
from airflow_provider_gravity.conversions.errors import ColumnContractError, GravityError
from airflow_provider_gravity.conversions.run.summary import bucket_counts
from airflow_provider_gravity.coverage_guard import (
    MIN_SAMPLE_EVENTS,
    CoverageFloor,
    MatchKeysCollapsed,
    SampledChunks,
    check_guard_arguments,
    coverage_floors,
    first_breach,
    sample_coverage,
)
from airflow_provider_gravity.exceptions import (
    AirflowException,
    AirflowFailException,
    GravityRunIncomplete,
    GravityRunRefused,
)
from airflow_provider_gravity.history.recording import read_coverage_baseline, record_run_history
from airflow_provider_gravity.hooks.gravity import GravityHook
from airflow_provider_gravity.metrics import emit_run_metrics

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_gravity.conversions.events.build import EventSettings
    from airflow_provider_gravity.conversions.run.delivery_log import DeliveryLog
    from airflow_provider_gravity.conversions.run.pipeline import ConversionPipeline, RunFailure, RunResult
    from airflow_provider_gravity.conversions.run.summary import RunSummary

# The run's modules (pandas, numpy, pyarrow, SQLAlchemy) are imported by the methods that run it, in
# execute: a DAG file imports this module at every parse and should not pay for them.

log = logging.getLogger(__name__)


def _default_retry_policy() -> Any:
    """
    On Airflow 3.3+ (retry policies, AIP-105): never retry what only a configuration change can fix; retry
    what Gravity left undelivered, saying why. ``None`` on older Airflow, whose BaseOperator has no policy.
    """
    try:
        from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule
    except ImportError:
        return None
    return ExceptionRetryPolicy(
        rules=[
            RetryRule(
                exception=GravityRunRefused,
                action=RetryAction.FAIL,
                reason="Gravity refused the configuration, or the query breaks the column contract",
            ),
            RetryRule(
                exception=GravityRunIncomplete,
                action=RetryAction.RETRY,
                reason="Gravity left events undelivered; the retry sends only those",
            ),
        ]
    )


class SendConversionsOperator(BaseSQLOperator):
    """
    Send offline conversions from any SQL warehouse to Gravity's Conversions API.

    The query's column aliases are the mapping (``event_id``, ``event_time``, ``em``, ``ph``, ``value``, ...;
    see the README's column contract). Rows are streamed in chunks, PII is normalized and SHA-256 hashed on
    the worker, events are sent in parallel batches, and every row ends in one bucket of the returned summary:
    ``delivered``, ``duplicate``, ``rejected``, ``invalid``, ``skipped_delivered`` or ``undelivered``.

    .. seealso::
        For more information on how to use this operator, take a look at the README.

    Task retries are Airflow's (``[core] default_task_retries`` unless the task sets ``retries``); the example
    DAGs set ``retries=3`` with exponential backoff. On Airflow 3.3+, a default ``retry_policy`` fails at once
    what a retry cannot fix (a bad key, a redirect, the column contract) and retries what Gravity left
    undelivered.

    :param sql: the query, or a path to a ``.sql`` file (templated). End it with ``ORDER BY event_id`` so a
        retried task can resume where the previous try stopped.
    :param conn_id: connection of any SQL database with a common-sql ``DbApiHook`` (templated).
    :param database: database (schema) to read from, overriding the connection's, as in ``BaseSQLOperator``
        (templated).
    :param parameters: DB-API parameters of the query, in the driver's style (templated).
    :param hook_params: extra arguments of every SQL hook the operator makes: the warehouse's, and the delivery
        log's and run history's when they are on other connections; passed to ``BaseSQLOperator.get_hook``,
        which adds the connection's extras (templated).
    :param retry_on_failure: as in common-sql's check operators: whether a run that left events undelivered
        fails so that Airflow retries it (``True``, the default; the retry sends only those events) or fails at
        once without retries (``False``: clear the task to send them). What only a change can fix never retries.
    :param gravity_conn_id: the Gravity connection (templated).
    :param event_name: event name of rows without an ``event_name`` column (templated).
    :param action_source: ``action_source`` of rows without one, e.g. ``physical_store`` (templated).
    :param event_source_url: ``event_source_url`` of rows without one (templated).
    :param timezone: IANA zone of naive ``event_time`` values.
    :param default_region: phone region (ISO 3166 alpha-2) of rows without a ``country``.
    :param chunk_size: rows fetched and processed at a time; memory grows with it, not with the result.
    :param batch_size: events per request, 1 to 1,000.
    :param max_concurrency: requests in flight at once.
    :param max_error_rate: share of rows rejected or invalid above which the task fails, after the run.
    :param require_match_key: refuse rows without em, ph, external_id, click_id or fn+ln.
    :param max_event_age: refuse events older than this (a ``timedelta`` or seconds); ``None`` for no limit.
    :param min_match_coverage: the least share of events each named match key must cover (``em``, ``ph``,
        ``fn_ln``, ``external_id``, ``click_id``, as in the summary's ``match_key_coverage``), e.g.
        ``{"em": 0.5}``, or that mapping as JSON text, e.g. a DAG param rendered with
        ``"{{ params.min_match_coverage | tojson }}"``. Checked on a first sample of rows, before anything is
        sent, and on the summary after the run; a key under its floor fails the task without retries
        (``GravityRunRefused``) (templated).
    :param max_coverage_drop: with a ``run_history_table``, also fail the task when a key's coverage falls
        under this share of its median over the task's last 7 successful runs (e.g. ``0.5``: under half the
        usual). Checked once the history holds 3 such runs.
    :param dry_run: do everything but send; log a hashed preview of the first events (templated).
    :param delivery_log_table: table remembering delivered events across runs, created if missing; ``None``
        to rely on Gravity's 48-hour dedup only (templated).
    :param delivery_log_conn_id: SQL connection of the delivery log; defaults to ``conn_id`` (templated).
    :param run_history_table: table that gets one row per try with its run summary (no PII), created if
        missing, read by the Gravity view of the Airflow UI; ``None`` for none. A dry run writes no row
        (templated).
    :param run_history_conn_id: SQL connection of the run history; defaults to the delivery log's
        (``delivery_log_conn_id``, else ``conn_id``) (templated).
    :param hash_phone_with_plus: hash phones as ``+E.164``; ``None`` reads the Gravity connection's extra.
    :param phone_backend: ``phonenumbers`` (default) or ``rphonenumbers`` (optional: faster for numbers written
        with more than digits and separators, such as an extension, about 3 µs against 27; for cleanly written
        ones the default's own parser is as fast, 2.6 µs against 3.0).
    :param progress_interval: seconds between two progress lines in the task log.
    :param durable: record acknowledged progress in Airflow's task state store (3.3+), so that a retried try
        sends only what the previous one left; ``False`` turns resuming off. The progress is cleared when the
        task succeeds.
    """

    template_fields: Sequence[str] = (
        "sql",
        "parameters",
        *BaseSQLOperator.template_fields,
        "gravity_conn_id",
        "event_name",
        "action_source",
        "event_source_url",
        "delivery_log_table",
        "delivery_log_conn_id",
        "run_history_table",
        "run_history_conn_id",
        "min_match_coverage",
        "dry_run",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"sql": "sql", "parameters": "json"}
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        sql: str,
        conn_id: str,
        database: str | None = None,
        parameters: Mapping[str, Any] | Sequence[Any] | None = None,
        hook_params: dict | None = None,
        retry_on_failure: bool = True,
        gravity_conn_id: str = GravityHook.default_conn_name,
        event_name: str | None = None,
        action_source: str | None = None,
        event_source_url: str | None = None,
        timezone: str = "UTC",
        default_region: str = "US",
        chunk_size: int = 10_000,
        batch_size: int = MAX_EVENTS_PER_REQUEST,
        max_concurrency: int = 4,
        max_error_rate: float = 0.01,
        require_match_key: bool = False,
        max_event_age: timedelta | float | None = None,
        min_match_coverage: Mapping[str, float] | str | None = None,
        max_coverage_drop: float | None = None,
        dry_run: bool | str = False,
        delivery_log_table: str | None = None,
        delivery_log_conn_id: str | None = None,
        run_history_table: str | None = None,
        run_history_conn_id: str | None = None,
        hash_phone_with_plus: bool | None = None,
        phone_backend: str = "phonenumbers",
        progress_interval: float = 10.0,
        durable: bool = True,
        **kwargs: Any,
    ) -> None:
        if "retry_policy" not in kwargs and (policy := _default_retry_policy()) is not None:
            kwargs["retry_policy"] = policy
        super().__init__(
            conn_id=conn_id, database=database, hook_params=hook_params, retry_on_failure=retry_on_failure, **kwargs
        )
        if not 1 <= batch_size <= MAX_EVENTS_PER_REQUEST:
            raise ValueError(f"batch_size must be between 1 and {MAX_EVENTS_PER_REQUEST}, got {batch_size}.")
        if chunk_size < 1 or max_concurrency < 1:
            raise ValueError("chunk_size and max_concurrency must be at least 1.")
        if not 0 <= max_error_rate <= 1:
            raise ValueError(f"max_error_rate is a share between 0 and 1, got {max_error_rate}.")
        if isinstance(min_match_coverage, str):  # JSON text, often a template: checked once rendered
            check_guard_arguments(None, max_coverage_drop)
        else:
            check_guard_arguments(min_match_coverage, max_coverage_drop)
            min_match_coverage = dict(min_match_coverage or {})
        self.sql = sql
        self.parameters = parameters
        self.gravity_conn_id = gravity_conn_id
        self.event_name = event_name
        self.action_source = action_source
        self.event_source_url = event_source_url
        self.timezone = timezone
        self.default_region = default_region
        self.chunk_size = chunk_size
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.max_error_rate = max_error_rate
        self.require_match_key = require_match_key
        self.max_event_age = max_event_age
        self.min_match_coverage: dict[str, float] | str = min_match_coverage
        self.max_coverage_drop = max_coverage_drop
        # Shadows BaseOperator.dry_run(), a method Airflow 3 itself no longer calls.
        self.dry_run = dry_run  # type: ignore[method-assign, assignment]
        self.delivery_log_table = delivery_log_table
        self.delivery_log_conn_id = delivery_log_conn_id
        self.run_history_table = run_history_table
        self.run_history_conn_id = run_history_conn_id
        self.hash_phone_with_plus = hash_phone_with_plus
        self.phone_backend = phone_backend
        self.progress_interval = progress_interval
        self.durable = durable
        self._explained_missing_state_store = False
        # The asset's URI needs the connection's host and the rendered event_name, known when the task runs:
        # the task declares an alias, and names the asset through it only after a run that delivered something.
        self.asset_alias = conversions_alias(self.dag_id, self.task_id)
        if self.asset_alias not in self.outlets:
            self.outlets.append(self.asset_alias)

    @cached_property
    def sql_hook(self) -> DbApiHook:
        """The common-sql hook of ``conn_id``, with ``database`` and ``hook_params``, as BaseSQLOperator gets it."""
        if not self.conn_id:  # a template may render empty
            raise GravityRunRefused("conn_id must name the SQL connection of the warehouse; it is empty.")
        return self._new_sql_hook(self.conn_id, self.database)

    def get_db_hook(self) -> DbApiHook:
        """:attr:`sql_hook`: what BaseSQLOperator's callers (OpenLineage) get is the hook the run reads with."""
        return self.sql_hook

    def sql_hook_of(self, conn_id: str | None) -> DbApiHook:
        """
        Return the common-sql hook of ``conn_id`` (the delivery log's, the run history's connection), with
        ``hook_params``; :attr:`sql_hook` when ``conn_id`` is ``None`` or empty.
        """
        return self._new_sql_hook(conn_id, None) if conn_id else self.sql_hook

    def _new_sql_hook(self, conn_id: str, database: str | None) -> DbApiHook:
        """Every SQL hook of the operator, made and checked here, as ``BaseSQLOperator._hook`` makes its one."""
        try:
            # A copy: get_hook adds the connection's extras to the dict it is given.
            hook = self.get_hook(conn_id=conn_id, hook_params=dict(self.hook_params))
        except (AirflowException, TypeError) as error:  # TypeError: a non-SQL hook refused the SQL hook's params
            raise _not_a_sql_hook(conn_id, f"does not give a common-sql hook ({type(error).__name__})") from error
        if not isinstance(hook, DbApiHook):
            raise _not_a_sql_hook(conn_id, f"gives a {type(hook).__name__}")
        if database:  # as BaseSQLOperator applies ``database``
            if hook.conn_type == "postgres":
                hook.database = database
            else:
                hook.schema = database
        return hook

    @cached_property
    def gravity_hook(self) -> GravityHook:
        """The Gravity hook, with one HTTP connection per parallel request."""
        return GravityHook(self.gravity_conn_id, pool_size=self.max_concurrency)

    def execute(self, context: Context) -> RunSummary:
        from airflow_provider_gravity.conversions.run.pipeline import RunFailure

        dry_run = _dry_run_flag(self.dry_run)
        pipeline: ConversionPipeline | None = None
        floors = self._coverage_floors(context)
        try:
            delivery_log = self._delivery_log(dry_run)
            pipeline = self._pipeline(context, dry_run, delivery_log)
            result = self._run(pipeline, delivery_log, dry_run, floors)
        except MatchKeysCollapsed as refusal:
            self._refuse_collapsed_sample(context, pipeline, dry_run, refusal)
            raise
        except ColumnContractError as err:
            self._record_stopped_try(context, pipeline, dry_run, RunFailure(str(err), retryable=False))
            raise GravityRunRefused(str(err)) from None
        except Exception as error:
            # Its text may quote a cell or a connection string: the history names the error's type only.
            reason = str(error) if isinstance(error, GravityError) else f"the run stopped with {type(error).__name__}"
            self._record_stopped_try(context, pipeline, dry_run, RunFailure(reason, retryable=True))
            raise
        return self._finish(result, context, dry_run, floors)

    def _coverage_floors(self, context: Context) -> list[CoverageFloor]:
        """Return the match-key guard's floors for this run; ``max_coverage_drop`` needs the run history."""
        min_match_coverage = self._min_match_coverage()
        if self.max_coverage_drop is None:
            return coverage_floors(min_match_coverage, None, None)
        if not self.run_history_table:
            raise GravityRunRefused(
                "max_coverage_drop compares a run with the task's earlier runs, which need a run_history_table: "
                "set run_history_table, or remove max_coverage_drop."
            )
        baseline = read_coverage_baseline(self, context)
        floors = coverage_floors(min_match_coverage, self.max_coverage_drop, baseline)
        if baseline is not None:
            self.log.info(
                "Match-key guard: %d earlier successful runs in the history; floors: %s.",
                baseline.runs,
                ", ".join(f"{floor.key} {floor.floor:.2%} ({floor.rule})" for floor in floors) or "none",
            )
        return floors

    def _min_match_coverage(self) -> dict[str, float]:
        """``min_match_coverage`` as rendered: a mapping, or JSON text of one (empty text or ``null``: none)."""
        floors: Any = self.min_match_coverage
        if isinstance(floors, str):
            try:
                floors = json.loads(floors) if floors.strip() else None
            except (ValueError, RecursionError):  # RecursionError: nested deeper than the decoder goes
                raise GravityRunRefused(
                    f'min_match_coverage must be a mapping of match key to share, e.g. {{"em": 0.5}}, or its JSON '
                    f"text; got text that is not JSON: {floors[:200]!r}."
                ) from None
        if floors is not None and not isinstance(floors, Mapping):
            raise GravityRunRefused(
                f'min_match_coverage must be a mapping of match key to share, e.g. {{"em": 0.5}}; got {floors!r}.'
            )
        try:
            check_guard_arguments(floors, None)
        except (TypeError, ValueError) as error:
            raise GravityRunRefused(str(error)) from None
        return dict(floors or {})

    def _refuse_collapsed_sample(
        self, context: Context, pipeline: ConversionPipeline | None, dry_run: bool, refusal: MatchKeysCollapsed
    ) -> None:
        """Record, count and publish a night refused on its first sample, before anything was sent."""
        from airflow_provider_gravity.conversions.run.pipeline import ConversionPipeline, RunFailure

        summary = pipeline.summary() if pipeline is not None else ConversionPipeline.empty_summary()
        summary["match_key_guard"] = refusal.breach.to_json()
        self.log.error("Match-key guard: %s", refusal.breach.message())
        failure = RunFailure(refusal.breach.message(), retryable=False)
        record_run_history(self, context, summary, dry_run=dry_run, failure=failure, too_many_errors=False)
        self._emit_metrics(summary, dry_run)
        context["ti"].xcom_push(key="gravity_summary", value=summary)

    def _record_stopped_try(
        self, context: Context, pipeline: ConversionPipeline | None, dry_run: bool, failure: RunFailure
    ) -> None:
        """Record the run history's row of a try that raised, with what it had settled before it stopped."""
        from airflow_provider_gravity.conversions.run.pipeline import ConversionPipeline

        summary = pipeline.summary() if pipeline is not None else ConversionPipeline.empty_summary()
        record_run_history(self, context, summary, dry_run=dry_run, failure=failure, too_many_errors=False)
        self._emit_metrics(summary, dry_run)

    def _pipeline(self, context: Context, dry_run: bool, delivery_log: DeliveryLog | None) -> ConversionPipeline:
        from airflow_provider_gravity.conversions.run.pipeline import ConversionPipeline
        from airflow_provider_gravity.conversions.run.resume import ResumeLog

        return ConversionPipeline(
            settings=self._event_settings(dry_run),
            sender=None if dry_run else self.gravity_hook.client,  # one client for all threads
            batch_size=self.batch_size,
            max_concurrency=self.max_concurrency,
            delivery_log=delivery_log,
            resume=ResumeLog(self._state_store(context, delivery_log is not None), self._fingerprint()),
            run_id=str(context.get("run_id") or "manual"),
            progress_interval=self.progress_interval,
        )

    def _run(
        self,
        pipeline: ConversionPipeline,
        delivery_log: DeliveryLog | None,
        dry_run: bool,
        floors: list[CoverageFloor],
    ) -> RunResult:
        from airflow_provider_gravity.conversions.read.chunks import read_chunks

        chunks = read_chunks(self.sql_hook, self.sql, self.parameters, self.chunk_size)
        try:
            if not floors:
                return pipeline.run(chunks)
            sampled = SampledChunks(chunks)
            self._check_sample(sampled, pipeline, floors)
            return pipeline.run(sampled)
        finally:
            chunks.close()  # releases the database cursor even when the run stopped early
            if delivery_log is not None:
                delivery_log.engine.dispose()
            if not dry_run:
                self.gravity_hook.close()

    def _check_sample(self, sampled: SampledChunks, pipeline: ConversionPipeline, floors: list[CoverageFloor]) -> None:
        """Refuse the night before anything is sent when the first sample's coverage is under a floor."""
        coverage, events = sample_coverage(sampled.sample(), pipeline.settings, pipeline.clock(), pipeline.pii_cache)
        if events < MIN_SAMPLE_EVENTS:
            self.log.info("Match-key guard: %d valid events in the first sample; the run's summary decides.", events)
            return
        breach = first_breach(coverage, floors, events=events, stage="sample")
        if breach is not None:
            raise MatchKeysCollapsed(breach)
        self.log.info(
            "Match-key guard: a first sample of %d events passes (%s).",
            events,
            ", ".join(f"{floor.key} {coverage[floor.key]:.2%} >= {floor.floor:.2%}" for floor in floors),
        )

    def _finish(self, result: RunResult, context: Context, dry_run: bool, floors: list[CoverageFloor]) -> RunSummary:
        """Log the summary; return it, or push it and raise the exception that says whether a retry helps."""
        from airflow_provider_gravity.conversions.run.pipeline import RunFailure
        from airflow_provider_gravity.conversions.run.tally import format_summary

        summary = result.summary
        table = format_summary(summary)
        self.log.info("Gravity run summary:\n%s", table)
        if dry_run:
            for event in result.preview:
                self.log.info("Dry-run preview (PII hashed): %s", json.dumps(event, sort_keys=True))
        failure = result.failure
        # Nothing sent, nothing to measure: an empty night is not a collapsed one.
        breach = first_breach(
            summary["match_key_coverage"],
            floors if summary["events_sent"] else (),
            events=summary["events_sent"],
            stage="summary",
        )
        if breach is not None:
            # Refused even with events undelivered: a retry would send more of a night whose match keys collapsed.
            summary["match_key_guard"] = breach.to_json()
            self.log.error("Match-key guard: %s", breach.message())
            failure = RunFailure(breach.message(), retryable=False)
        too_many_errors = summary["error_rate"] > self.max_error_rate
        record_run_history(self, context, summary, dry_run=dry_run, failure=failure, too_many_errors=too_many_errors)
        self._emit_metrics(summary, dry_run)
        if failure or too_many_errors:
            # A failed task returns nothing: keep its summary where the UI and downstream tasks can read it.
            context["ti"].xcom_push(key="gravity_summary", value=summary)
        if breach is not None:
            raise MatchKeysCollapsed(breach, f"\n{table}")
        if failure and failure.retryable:
            undelivered = f"{summary['undelivered']:,} events were not delivered ({failure.message})"
            if not self.retry_on_failure:
                raise AirflowFailException(
                    f"{undelivered}; retry_on_failure is off, so the task fails without retries: clear it to send "
                    f"only those.\n{table}"
                )
            raise GravityRunIncomplete(f"{undelivered}; a retry of this task sends only those.\n{table}")
        if failure:
            raise GravityRunRefused(
                f"{failure.message} {summary['undelivered']:,} events were not delivered; what Gravity "
                f"acknowledged is recorded. Fix the Gravity connection, then clear the task.\n{table}"
            )
        if too_many_errors:
            raise GravityRunRefused(
                f"Error rate {summary['error_rate']:.2%} is above max_error_rate {self.max_error_rate:.2%} "
                f"(rejected + invalid over rows read).\n{table}"
            )
        self._emit_asset_event(context, summary, dry_run)
        return summary

    def _emit_asset_event(self, context: Context, summary: RunSummary, dry_run: bool) -> None:
        """
        Emit the asset event of a successful run that delivered something: the task's asset, added to its alias,
        with the run's bucket counts as the event's extra. A dry run, or a run whose events were all skipped
        or already held by Gravity, emits none, so a DAG scheduled on the asset runs only for new conversions.
        """
        if dry_run or not summary["delivered"]:
            self.log.info("Nothing new delivered: no asset event.")
            return
        try:
            asset = conversions_asset(self.gravity_conn_id, self.event_name)
        except ValueError as error:  # the delivery stands; failing now would make the retry skip it all
            self.log.error("No asset event: the asset could not be named (%s).", error)
            return
        outlet_events = context.get("outlet_events")
        if outlet_events is None:  # executed outside a task runner (a script, a benchmark): no asset to update
            self.log.info("No asset event: this run has no task context to record it in.")
            return
        extra: dict[str, Any] = {"rows_read": summary["rows_read"]}
        extra.update({str(bucket): rows for bucket, rows in bucket_counts(summary).items()})
        outlet_events[self.asset_alias].add(asset, extra=extra)
        self.log.info("Asset event for %s: %d events delivered.", asset.uri, summary["delivered"])

    def _emit_metrics(self, summary: RunSummary, dry_run: bool) -> None:
        """Emit the try's metrics through Airflow's metrics configuration; a dry run delivers nothing and emits none."""
        if not dry_run:
            emit_run_metrics(summary, dag_id=self.dag_id, task_id=self.task_id)

    def _state_store(self, context: Context, has_delivery_log: bool) -> Any:
        """
        Airflow's task state store, or ``None`` when resuming is off or this Airflow has none (before 3.3). Its
        absence is explained once per operator, so once in each try's log: a worker runs each try in a process
        of its own, with an operator of its own.
        """
        if not self.durable:
            return None
        store = context.get("task_state_store")
        if store is None and not self._explained_missing_state_store:
            self._explained_missing_state_store = True
            fallback = (
                "the delivery log makes the retry skip every event already delivered"
                if has_delivery_log
                else "Gravity's 48-hour dedup absorbs what was delivered (set delivery_log_table to skip it instead)"
            )
            log.warning(
                "This Airflow has no task state store (it came with Airflow 3.3), so a retry of this task cannot "
                "resume where the failed try stopped: it reads the whole window again, and %s.",
                fallback,
            )
        return store

    def _event_settings(self, dry_run: bool) -> EventSettings:
        from airflow_provider_gravity.conversions.events.build import EventSettings

        with_plus = self.hash_phone_with_plus
        if with_plus is None:
            with_plus = self._connection_hashes_phones_with_plus(dry_run)
        max_age = self.max_event_age
        if isinstance(max_age, timedelta):
            max_age = max_age.total_seconds()
        return EventSettings(
            event_name=self.event_name or None,
            action_source=self.action_source or None,
            event_source_url=self.event_source_url or None,
            timezone=self.timezone,
            default_region=self.default_region,
            phone_with_plus=with_plus,
            require_match_key=self.require_match_key,
            max_event_age_seconds=max_age,
            phone_backend=self.phone_backend,
        )

    def _connection_hashes_phones_with_plus(self, dry_run: bool) -> bool:
        """
        Read the Gravity connection's ``hash_phone_with_plus``; a dry run needs no connection, and then
        hashes without.
        """
        try:
            return self.gravity_hook.hash_phone_with_plus
        except Exception:
            if not dry_run:
                raise
            log.info(
                "Dry run without a Gravity connection %r: phones are hashed as E.164 digits.", self.gravity_conn_id
            )
            return False

    def _delivery_log(self, dry_run: bool) -> DeliveryLog | None:
        """Return the delivery log; a dry run only reads it (to show what would be skipped) and never creates it."""
        if not self.delivery_log_table:
            return None
        from airflow_provider_gravity.conversions.run.delivery_log import DeliveryLog

        hook = self.sql_hook_of(self.delivery_log_conn_id)
        delivery_log = DeliveryLog(
            hook.get_sqlalchemy_engine(),
            self.delivery_log_table,
            read_only=dry_run,
            dag_id=self.dag_id,
            task_id=self.task_id,
        )
        if dry_run:
            return delivery_log if delivery_log.table_exists() else None
        delivery_log.ensure_table()
        return delivery_log

    def _fingerprint(self) -> str:
        identity = json.dumps(
            [self.sql, self.parameters, self.conn_id, self.database, self.event_name, self.chunk_size, self.batch_size],
            default=str,
            sort_keys=True,
        )
        return hashlib.sha256(identity.encode()).hexdigest()[:32]

    def get_openlineage_facets_on_complete(self, task_instance) -> Any:
        """
        Lineage: the tables the query reads (found by OpenLineage's SQL parser, as for SQLExecuteQueryOperator)
        as inputs, and Gravity's conversions of the event name as output: the task's asset
        (:func:`~airflow_provider_gravity.assets.conversions_asset`) in OpenLineage's form. Makes no call to
        Gravity.
        """
        try:
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:
            return None
        try:
            parsed = self.get_openlineage_facets_on_start() or OperatorLineage()
        except Exception as error:  # noqa: BLE001 - lineage must never fail the task
            log.debug("OpenLineage could not parse the query's tables: %s", type(error).__name__)
            parsed = OperatorLineage()
        try:
            output = convert_asset_to_openlineage(conversions_asset(self.gravity_conn_id, self.event_name))
        except Exception as error:  # noqa: BLE001 - lineage must never fail the task
            log.debug("No lineage output: the asset could not be named (%s).", type(error).__name__)
            return parsed
        return OperatorLineage(
            inputs=parsed.inputs, outputs=[output], run_facets=parsed.run_facets, job_facets=parsed.job_facets
        )


_TRUE_TEXTS = frozenset({"1", "true", "yes", "on"})
_FALSE_TEXTS = frozenset({"0", "false", "no", "off", "", "none", "null"})


def _dry_run_flag(value: Any) -> bool:
    """
    ``dry_run`` as rendered: a bool, or text of one (``"{{ params.dry_run }}"`` renders ``True``/``False``).
    Other text is refused before anything is read: a typo (``ture``) must not turn a dry run into a delivery.
    """
    if not isinstance(value, str):
        return bool(value)
    text = value.strip().lower()
    if text in _TRUE_TEXTS or text in _FALSE_TEXTS:
        return text in _TRUE_TEXTS
    raise GravityRunRefused(
        f"dry_run must be true or false (or 1/0, yes/no, on/off); got {value[:100]!r}. Nothing was read or sent."
    )


def _not_a_sql_hook(conn_id: str, what: str) -> GravityRunRefused:
    return GravityRunRefused(
        f"Connection {conn_id!r} {what}, not a SQL hook: it must name a database connection whose hook is a "
        "common-sql DbApiHook (Postgres, MySQL, Snowflake, BigQuery, SQLite, ...)."
    )
