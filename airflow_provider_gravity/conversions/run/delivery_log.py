"""
Delivery log: a SQL table that remembers, per event, what was delivered to Gravity.

Gravity deduplicates ``(event_name, event_id)`` only within 48 hours. The delivery log keeps each
event's final status beyond that window, so a re-run or a backfill weeks later skips events that
were already delivered. Rejected and invalid events stay in the table as the dead letter.

The log stores identifiers, statuses, reasons and the SHA-256 of the payload sent; it never
receives plaintext PII. It works on PostgreSQL, MySQL/MariaDB and SQLite with native upserts,
and on any other SQLAlchemy dialect through a portable lookup-then-write fallback. Several
writers (mapped tasks, concurrent backfill runs) may create and write the table at once.

This module does not import Airflow: the operator hands in a SQLAlchemy engine.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from airflow_provider_gravity.conversions.buckets import DEAD_LETTER_BUCKETS, DELIVERED_BUCKETS, Bucket
from airflow_provider_gravity.conversions.read.columns import MAX_KEY_LENGTH
from airflow_provider_gravity.storage.ddl import TableRole, ensure_table, table_exists
from airflow_provider_gravity.storage.delivery_log_table import ADDED_COLUMNS, MAX_DETAIL_LENGTH, delivery_log_table
from airflow_provider_gravity.storage.engines import with_full_unicode
from airflow_provider_gravity.storage.names import parse_table_name, qualified_name
from airflow_provider_gravity.storage.retry import retry_transient
from airflow_provider_gravity.storage.sql_types import MAX_ID_LENGTH

log = logging.getLogger(__name__)

DELIVERED, DUPLICATE, REJECTED, INVALID = Bucket.DELIVERED, Bucket.DUPLICATE, Bucket.REJECTED, Bucket.INVALID
#: The buckets a row of the log can hold (``skipped_delivered`` and ``undelivered`` are never written).
STATUSES = frozenset({*DELIVERED_BUCKETS, *DEAD_LETTER_BUCKETS})
#: Statuses meaning Gravity holds the event; a later failure never replaces them.
_HELD_BY_GRAVITY = tuple(DELIVERED_BUCKETS)
_FAILED = DEAD_LETTER_BUCKETS

LOOKUP_SLICE_SIZE = 500
#: Rows per executemany; the driver or SQLAlchemy batches them into multi-row statements.
WRITE_CHUNK_SIZE = 5000
#: Characters of an over-long key kept in front of its hash, so the dead letter still shows what it was.
_FITTED_PREFIX_LENGTH = MAX_KEY_LENGTH - len("~sha256:") - 64 - 2

# PostgreSQL cannot store NUL; other control characters would break a line of the dead-letter report.
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f]")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_ROLE = TableRole("delivery log", "a delivery log", "delivery_log_table", log)

_T = TypeVar("_T")


@dataclass(frozen=True)
class DeliveryRecord:
    """
    The final outcome of one event in one run, as written to the delivery log.

    :param event_name: Gravity event name, first half of the key.
    :param event_id: the event's stable id, second half of the key.
    :param status: ``delivered``, ``duplicate``, ``rejected`` or ``invalid``.
    :param detail: Gravity's status and error (``"error: invalid event_time"``) or our reason
        (``"bad_currency"``); cut to 1,000 characters. Must not contain plaintext PII.
    :param payload_sha256: lowercase hex SHA-256 of the canonical JSON payload Gravity accepted
        (``delivered``); None otherwise: for a ``duplicate``, Gravity kept the values of an earlier send,
        which this run does not know.
    """

    event_name: str
    event_id: str
    status: str
    detail: str | None
    payload_sha256: str | None


@dataclass(frozen=True)
class LoggedEvent:
    """
    What the delivery log holds for one event.

    :param status: the stored final status.
    :param payload_sha256: hash of the payload Gravity accepted, or None when not known.
    """

    status: str
    payload_sha256: str | None


def fit_key(key: str) -> str:
    """
    Return a key the table can hold: the key itself when it has at most 255 characters, all printable UTF-8;
    else a readable prefix of it and the SHA-256 of the whole, e.g. ``"xxxx…~sha256:9f86d0…"``. Such keys
    belong to invalid rows only (``event_id_too_long``, ``bad_event_id``): their dead-letter record must
    not fail the run, and two of them stay two records.
    """
    if len(key) <= MAX_KEY_LENGTH and not _UNSTORABLE.search(key) and (key.isascii() or _is_utf8(key)):
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    prefix = _UNSTORABLE.sub("?", key[:_FITTED_PREFIX_LENGTH]).encode("utf-8", "replace").decode("utf-8")
    return f"{prefix}~sha256:{digest}"


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _literal_statuses(statuses: Sequence[str]) -> list[sa.ColumnElement[str]]:
    # Rendered inline, not as bound parameters: PyMySQL's multi-row executemany rewrite copies the
    # ON DUPLICATE KEY UPDATE tail verbatim, so placeholders there would never be filled in.
    # The values are this module's own constants, never user input.
    return [sa.literal_column(f"'{status}'") for status in statuses]


def _keeps_existing(existing_status: sa.ColumnElement[Any], new_status: sa.ColumnElement[Any]) -> Any:
    """Return a condition, true where the stored status is a delivery and the new one a failure: keep the delivery."""
    return sa.and_(
        existing_status.in_(_literal_statuses(_HELD_BY_GRAVITY)),
        new_status.in_(_literal_statuses(_FAILED)),
    )


def _merged_assignments(table: sa.Table, new: Any) -> list[tuple[str, Any]]:
    """
    Column assignments for an existing row, given ``new`` (``excluded`` / ``inserted`` / bind params).

    The payload hash changes only with a ``delivered`` status: the log never holds the hash of a payload
    Gravity did not accept. MySQL evaluates ON DUPLICATE KEY UPDATE assignments left to right, each seeing
    the ones before; ``keep`` gives the same answer before and after ``status`` is assigned, and the hash
    is assigned before the status, so the order is safe.
    """
    keep = _keeps_existing(table.c.status, new.status)
    accepted = new.status.in_(_literal_statuses((DELIVERED,)))
    return [
        ("payload_sha256", sa.case((accepted, new.payload_sha256), else_=table.c.payload_sha256)),
        ("status", sa.case((keep, table.c.status), else_=new.status)),
        ("detail", new.detail),
        ("attempts", table.c.attempts + new.attempts),
        ("last_run_id", new.last_run_id),
        ("last_recorded_at", new.last_recorded_at),
        ("dag_id", new.dag_id),
        ("task_id", new.task_id),
    ]


class DeliveryLog:
    """
    A table of per-event delivery outcomes keyed by ``(event_name, event_id)``.

    Call :meth:`ensure_table` once before use; :meth:`lookup` tells which events are already
    logged and :meth:`record` upserts the outcomes of a batch. A ``delivered`` or ``duplicate``
    status is never replaced by ``rejected`` or ``invalid`` (Gravity still holds the earlier
    delivery, and its payload hash is kept with it); ``detail``, ``attempts``, ``last_*``, ``dag_id`` and
    ``task_id`` are updated on every record.

    :param engine: SQLAlchemy engine, e.g. from ``DbApiHook.get_sqlalchemy_engine()``.
    :param table_name: ``table`` or ``schema.table``; letters, digits and underscores only.
    :param schema: schema of the table, if not given in ``table_name``.
    :param read_only: look up, never write (a dry run): :meth:`record` then does nothing.
    :param dag_id: the DAG of the task writing, stored with each record (the Gravity view shows a reader the
        dead letter of the DAGs they may read by it); ``None`` stores NULL, a DAG nobody but a reader of every
        DAG sees.
    :param task_id: the task writing, stored with each record.
    """

    def __init__(
        self,
        engine: Engine,
        table_name: str,
        *,
        schema: str | None = None,
        read_only: bool = False,
        dag_id: str | None = None,
        task_id: str | None = None,
    ) -> None:
        self.schema, self.table_name = parse_table_name(table_name, schema, subject="delivery log")
        self.engine = with_full_unicode(engine)
        self.read_only = read_only
        for label, value in (("dag_id", dag_id), ("task_id", task_id)):
            if value is not None and (not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH):
                raise ValueError(f"{label} must be a non-empty string of at most {MAX_ID_LENGTH} characters.")
        self.dag_id = dag_id
        self.task_id = task_id
        self.table = delivery_log_table(self.table_name, self.schema)

    @property
    def qualified_name(self) -> str:
        """``schema.table`` or ``table``, as given."""
        return qualified_name(self.table)

    def ensure_table(self) -> None:
        """
        Create the table if it does not exist, tolerating other processes creating it at the same time.

        PostgreSQL can fail one of two concurrent ``CREATE TABLE IF NOT EXISTS`` with a unique
        violation on ``pg_type``; other databases may report "already exists". After such an error
        the table's existence is checked and creation retried a few times
        (:mod:`~airflow_provider_gravity.storage.ddl`).

        A table created by an earlier version lacks ``dag_id`` and ``task_id`` and the view's indexes: they are
        added (an additive migration; several writers may run it at once, and rows already there keep NULL in
        the new columns).

        :raises ValueError: if a table of that name exists without the delivery log's columns.
        """
        ensure_table(self.engine, self.table, _ROLE, added=ADDED_COLUMNS)

    def lookup(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], LoggedEvent]:
        """
        Return the logged status of each given ``(event_name, event_id)`` that is in the table.

        Keys are queried per event name in slices of 500 ids, which uses the primary key index.

        :param keys: ``(event_name, event_id)`` pairs; repeats are fine.
        :return: a dict holding only the keys present in the log.
        """
        ids_by_name: dict[str, set[str]] = {}
        for event_name, event_id in keys:
            ids_by_name.setdefault(event_name, set()).add(event_id)
        if not ids_by_name:
            return {}
        found: dict[tuple[str, str], LoggedEvent] = {}
        with self.engine.connect() as connection:
            for event_name, ids in ids_by_name.items():
                for id_slice in _slices(sorted(ids), LOOKUP_SLICE_SIZE):
                    found.update(self._select_existing(connection, event_name, id_slice))
        return found

    def record(self, records: Sequence[DeliveryRecord], *, run_id: str) -> None:
        """
        Upsert the outcome of each record in one transaction, with batched statements.

        New keys are inserted with ``attempts`` 1; existing keys get ``attempts`` incremented, the
        new detail, payload hash and status (unless that would replace a delivery by a failure) and
        ``last_run_id`` / ``last_recorded_at``; ``first_*`` are kept. A key given several times in one
        call is merged by the same rule and counts each time. Deadlocks and serialization failures
        from concurrent writers are retried a few times.

        :param records: outcomes to log.
        :param run_id: id of the run writing them (Airflow's ``run_id``).
        :raises ValueError: on an unknown status, a malformed hash or a key/run id that is too long.
        """
        if not isinstance(run_id, str) or not run_id or len(run_id) > MAX_ID_LENGTH:
            raise ValueError(f"run_id must be a non-empty string of at most {MAX_ID_LENGTH} characters.")
        rows = _rows_for(records, run_id, datetime.now(UTC), self.dag_id, self.task_id)
        if not rows or self.read_only:
            return
        native_write = self._native_upsert_writer()
        if native_write is not None:
            retry_transient(
                lambda: self._in_transaction(lambda connection: native_write(connection, rows)),
                subject="Delivery log",
                logger=log,
            )
        else:
            # The portable writer can lose an insert race to another writer; a second pass sees the row.
            retry_transient(
                lambda: self._in_transaction(
                    lambda connection: self._write_portably(connection, rows), integrity_attempts=2
                ),
                subject="Delivery log",
                logger=log,
            )

    # -- writing -----------------------------------------------------------------------------------

    def _native_upsert_writer(self) -> Callable[[Connection, list[dict[str, Any]]], None] | None:
        builder = _NATIVE_UPSERTS.get(self.engine.dialect.name)
        if builder is None:
            return None
        statement = builder(self.table)

        def write(connection: Connection, rows: list[dict[str, Any]]) -> None:
            for chunk in _slices(rows, WRITE_CHUNK_SIZE):
                connection.execute(statement, chunk).close()

        return write

    def _write_portably(self, connection: Connection, rows: list[dict[str, Any]]) -> None:
        """Lookup-then-UPDATE/INSERT for dialects without a native upsert SQLAlchemy can emit."""
        table = self.table
        ids_by_name: dict[str, list[str]] = {}
        for row in rows:
            ids_by_name.setdefault(row["event_name"], []).append(row["event_id"])
        existing: set[tuple[str, str]] = set()
        for event_name, ids in ids_by_name.items():
            for id_slice in _slices(ids, LOOKUP_SLICE_SIZE):
                existing.update(key for key, _ in self._select_existing(connection, event_name, id_slice))
        updates = [row for row in rows if (row["event_name"], row["event_id"]) in existing]
        inserts = [row for row in rows if (row["event_name"], row["event_id"]) not in existing]
        if updates:
            new = _BoundRow()
            statement = (
                sa.update(table)
                .where(table.c.event_name == sa.bindparam("key_event_name"))
                .where(table.c.event_id == sa.bindparam("key_event_id"))
                .values(dict(_merged_assignments(table, new)))
            )
            for chunk in _slices(updates, WRITE_CHUNK_SIZE):
                connection.execute(statement, [_as_update_params(row) for row in chunk])
        for chunk in _slices(inserts, WRITE_CHUNK_SIZE):
            connection.execute(sa.insert(table), chunk)

    def _in_transaction(self, work: Callable[[Connection], None], *, integrity_attempts: int = 1) -> None:
        for attempt in range(1, integrity_attempts + 1):
            try:
                with self.engine.begin() as connection:
                    work(connection)
                return
            except IntegrityError:
                if attempt == integrity_attempts:
                    raise
                log.info("Delivery log %s: concurrent insert detected; retrying once.", self.qualified_name)

    # -- reading -----------------------------------------------------------------------------------

    def _select_existing(
        self, connection: Connection, event_name: str, event_ids: Sequence[str]
    ) -> Iterator[tuple[tuple[str, str], LoggedEvent]]:
        table = self.table
        statement = sa.select(table.c.event_id, table.c.status, table.c.payload_sha256).where(
            table.c.event_name == event_name, table.c.event_id.in_(event_ids)
        )
        for event_id, status, payload_sha256 in connection.execute(statement):
            yield (event_name, event_id), LoggedEvent(status=status, payload_sha256=payload_sha256)

    def table_exists(self) -> bool:
        """Whether the table is there (a dry run reads a log it must not create)."""
        return table_exists(self.engine, self.table)


class _BoundRow:
    """Stands in for ``excluded`` in the portable UPDATE: each new value is a bound parameter."""

    def __getattr__(self, name: str) -> sa.BindParameter[Any]:
        return sa.bindparam(f"new_{name}")


def _as_update_params(row: dict[str, Any]) -> dict[str, Any]:
    params = {f"new_{name}": value for name, value in row.items()}
    params["key_event_name"] = row["event_name"]
    params["key_event_id"] = row["event_id"]
    return params


def _postgresql_upsert(table: sa.Table) -> sa.Executable:
    statement = postgresql_dialect.insert(table)
    # With RETURNING, SQLAlchemy sends an executemany as multi-row INSERTs ("insertmanyvalues", 1,000
    # rows a page); without it, an ON CONFLICT executemany goes to the server one row at a time.
    return statement.on_conflict_do_update(
        index_elements=[table.c.event_name, table.c.event_id],
        set_=dict(_merged_assignments(table, statement.excluded)),
    ).returning(table.c.attempts)


def _sqlite_upsert(table: sa.Table) -> sa.Executable:
    # In-process executemany: no round trips to save.
    statement = sqlite_dialect.insert(table)
    return statement.on_conflict_do_update(
        index_elements=[table.c.event_name, table.c.event_id],
        set_=dict(_merged_assignments(table, statement.excluded)),
    )


def _mysql_upsert(table: sa.Table) -> sa.Executable:
    # MySQL drivers (PyMySQL, mysqlclient) rewrite an INSERT executemany into multi-row statements.
    statement = mysql_dialect.insert(table)
    return statement.on_duplicate_key_update(_merged_assignments(table, statement.inserted))


_NATIVE_UPSERTS: dict[str, Callable[[sa.Table], sa.Executable]] = {
    "postgresql": _postgresql_upsert,
    "sqlite": _sqlite_upsert,
    "mysql": _mysql_upsert,
    "mariadb": _mysql_upsert,
}


def _rows_for(
    records: Sequence[DeliveryRecord],
    run_id: str,
    now: datetime,
    dag_id: str | None = None,
    task_id: str | None = None,
) -> list[dict[str, Any]]:
    """Validate records, merge repeats of a key, and return rows sorted by key (a stable lock order)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        _validate(record)
        key = (record.event_name, record.event_id)
        detail = record.detail[:MAX_DETAIL_LENGTH] if record.detail is not None else None
        previous = merged.get(key)
        if previous is None:
            merged[key] = {
                "event_name": record.event_name,
                "event_id": record.event_id,
                "status": record.status,
                "detail": detail,
                "payload_sha256": record.payload_sha256,
                "attempts": 1,
                "first_run_id": run_id,
                "last_run_id": run_id,
                "first_recorded_at": now,
                "last_recorded_at": now,
                "dag_id": dag_id,
                "task_id": task_id,
            }
            continue
        previous["attempts"] += 1
        previous["detail"] = detail
        if record.status == DELIVERED:
            previous["payload_sha256"] = record.payload_sha256
        if not (previous["status"] in _HELD_BY_GRAVITY and record.status in _FAILED):
            previous["status"] = record.status
    return [merged[key] for key in sorted(merged)]


def _validate(record: DeliveryRecord) -> None:
    for label, value in (("event_name", record.event_name), ("event_id", record.event_id)):
        if not isinstance(value, str) or not value or len(value) > MAX_KEY_LENGTH:
            raise ValueError(f"Delivery log {label} must be a non-empty string of at most {MAX_KEY_LENGTH} characters.")
    if record.status not in STATUSES:
        raise ValueError(f"Unknown delivery status {record.status!r}; expected one of {sorted(STATUSES)}.")
    if record.payload_sha256 is not None and not _SHA256_HEX.fullmatch(record.payload_sha256):
        raise ValueError("payload_sha256 must be 64 lowercase hexadecimal characters or None.")
    if record.payload_sha256 is not None and record.status != DELIVERED:
        raise ValueError("Only a delivered event has a payload hash: Gravity accepted no other payload.")
    if record.detail is not None and not isinstance(record.detail, str):
        raise ValueError("detail must be a string or None.")


def _slices(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
