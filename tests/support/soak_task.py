"""
One try of a send-conversions task, as a script the soak test runs (and kills) as a subprocess.

``python -m tests.support.soak_task --db-url ... --sql ... --out summary.json`` reads the query with
:func:`~airflow_provider_gravity.conversions.read.chunks.stream_query`, sends it with a
:class:`~airflow_provider_gravity.conversions.run.pipeline.ConversionPipeline` backed by a delivery log and a
:class:`~airflow_provider_gravity.conversions.run.resume.ResumeLog` over :class:`JsonFileStore` (a stand-in for
Airflow's ``task_state_store`` that survives the process), and writes what happened to ``--out``:

``{"summary": {...}, "failure": null | {"message": str, "retryable": bool}, "crash": null | str}``

Exit status: 0 when the run succeeded, 1 when it ended with a failure (a retry should follow), 2 when it
raised (``crash`` holds the traceback). ``--kill-in-log-write N`` makes the try SIGKILL itself inside its
N-th write to the delivery log, after the upsert ran and before it commits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from airflow_provider_gravity.conversions.api.client import GravityClient, RetryPolicy
from airflow_provider_gravity.conversions.events.build import EventSettings
from airflow_provider_gravity.conversions.read.chunks import stream_query
from airflow_provider_gravity.conversions.run.delivery_log import DeliveryLog
from airflow_provider_gravity.conversions.run.pipeline import ConversionPipeline
from airflow_provider_gravity.conversions.run.resume import ResumeLog

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_CRASHED = 2


class JsonFileStore:
    """
    A key-value store in one JSON file, standing in for Airflow's ``task_state_store``: it outlives the
    process, so the next try of the task reads what this one saved. Each write replaces the file
    atomically (``os.replace``), so a try killed at any moment leaves the previous or the new content.

    :param path: the file; missing means empty.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def _write(self, values: dict[str, Any]) -> None:
        write_json_atomically(self.path, values)

    def get(self, key: str, default: Any = None) -> Any:
        return self._read().get(key, default)

    def set(self, key: str, value: Any) -> None:
        values = self._read()
        values[key] = value
        self._write(values)

    def delete(self, key: str) -> None:
        values = self._read()
        if values.pop(key, None) is not None:
            self._write(values)


def write_json_atomically(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary file and ``os.replace``."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(value, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def kill_inside_log_write(engine: sa.Engine, table_name: str, nth: int) -> None:
    """
    SIGKILL this process in the ``nth`` transaction that writes ``table_name``: its statements have run, its
    commit has not. Watches the engine through SQLAlchemy's public connection events only.
    """
    writes = 0
    marker = "soak_writes_delivery_log"

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _note_write(connection, cursor, statement, parameters, context, executemany) -> None:
        words = statement.split(None, 3)
        if len(words) > 2 and words[0].upper() == "INSERT" and words[2].split(".")[-1] == table_name:
            connection.info[marker] = True

    @sa.event.listens_for(engine, "rollback")
    def _forget(connection) -> None:
        connection.info.pop(marker, None)

    @sa.event.listens_for(engine, "commit")
    def _kill_before_commit(connection) -> None:
        nonlocal writes
        if connection.info.pop(marker, False):
            writes += 1
            if writes == nth:
                os.kill(os.getpid(), signal.SIGKILL)


def _failure_of(result: Any) -> dict[str, Any] | None:
    """The run's failure as JSON; reads ``RunResult.failure``, or ``gave_up`` before that field existed."""
    failure = getattr(result, "failure", None)
    if failure is not None:
        return {"message": str(failure.message), "retryable": bool(failure.retryable)}
    gave_up = getattr(result, "gave_up", None)
    if gave_up:
        return {"message": str(gave_up), "retryable": True}
    return None


def run_try(args: argparse.Namespace) -> dict[str, Any]:
    """Run the pipeline once over the query and return the summary and the failure, if any."""
    engine = sa.create_engine(args.db_url)
    if args.kill_in_log_write:
        kill_inside_log_write(engine, args.log_table.split(".")[-1], args.kill_in_log_write)
    client = GravityClient(
        args.sandbox_url,
        os.environ["GRAVITY_SOAK_API_KEY"],
        timeout=args.timeout,
        connect_timeout=args.timeout,
        retry=RetryPolicy(max_retries=args.max_retries, backoff_base=0.01),
        pool_size=args.max_concurrency,
    )
    delivery_log = DeliveryLog(engine, args.log_table)
    delivery_log.ensure_table()
    pipeline = ConversionPipeline(
        settings=EventSettings(event_name=args.event_name),
        sender=client,
        batch_size=args.batch_size,
        max_concurrency=args.max_concurrency,
        delivery_log=delivery_log,
        resume=ResumeLog(JsonFileStore(Path(args.store)), args.fingerprint),
        run_id=args.run_id,
    )
    chunks = stream_query(engine, args.sql, None, args.chunk_size)
    try:
        result = pipeline.run(chunks)
    finally:
        chunks.close()
        client.close()
        engine.dispose()
    return {"summary": result.summary, "failure": _failure_of(result), "crash": None}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--db-url", required=True, help="SQLAlchemy URL of the warehouse and the delivery log")
    parser.add_argument("--sql", required=True, help="the query; ends with ORDER BY event_id")
    parser.add_argument("--log-table", required=True, help="delivery log table, schema.table")
    parser.add_argument("--sandbox-url", required=True, help="base URL of the Gravity sandbox (key: env)")
    parser.add_argument("--store", required=True, help="JSON file of the task state store")
    parser.add_argument("--fingerprint", required=True, help="identity of the task's query and arguments")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--out", required=True, help="where the result JSON goes")
    parser.add_argument("--event-name", default="Purchase")
    parser.add_argument("--chunk-size", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--max-concurrency", type=int, default=4)
    parser.add_argument("--max-retries", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    parser.add_argument("--kill-in-log-write", type=int, default=0, help="SIGKILL inside this delivery log write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        outcome = run_try(args)
    except Exception:
        traceback.print_exc()
        outcome = {"summary": None, "failure": None, "crash": traceback.format_exc()}
    write_json_atomically(Path(args.out), outcome)
    if outcome["crash"] is not None:
        return EXIT_CRASHED
    return EXIT_FAILED if outcome["failure"] is not None else EXIT_SUCCEEDED


if __name__ == "__main__":
    sys.exit(main())
