"""Where the time of one run goes: each stage of the operator's path timed alone on the same rows.

Run after ``bench_e2e.py`` has loaded the table: ``.venv/bin/python benchmarks/profile_stages.py --rows 200000``.
Stages: reading chunks from PostgreSQL as the operator does (``read_chunks``: ADBC when installed);
``build_events`` (validation, PII, encoding) with one PII cache for the run as the pipeline has, and with a
cache per chunk; ``hash_user_fields`` alone; joining the encoded events into 1,000-event bodies as the client
does (``encode_body``); the fast sink's and the sandbox's own throughput for those bodies, and the provider's
client against the fast sink; and the naive loop's per-row work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR.parent), str(BENCH_DIR)]

import naive_baseline  # noqa: E402
import psycopg2  # noqa: E402
import requests  # noqa: E402
import warehouse  # noqa: E402
from fast_sink import FastSink  # noqa: E402

from airflow_provider_gravity.conversions.api.client import GravityClient  # noqa: E402
from airflow_provider_gravity.conversions.api.wire import encode_body  # noqa: E402
from airflow_provider_gravity.conversions.events.build import EventSettings, build_events  # noqa: E402
from airflow_provider_gravity.conversions.pii.user_fields import PiiCache  # noqa: E402
from airflow_provider_gravity.conversions.read.chunks import read_chunks  # noqa: E402
from airflow_provider_gravity.conversions.read.columns import normalize_column_names  # noqa: E402
from airflow_provider_gravity.sandbox.launcher import SandboxServer  # noqa: E402

T = TypeVar("T")
BATCH = 1_000
LABEL_WIDTH = 72
#: The last line of the output: each stage's microseconds per row, as JSON, for ``bench_e2e.py``'s table.
STAGES_PREFIX = "STAGES-JSON "
#: Microseconds per row of each timed line, by its label.
MEASURED: dict[str, float] = {}


def timed(label: str, rows: int, function: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - started
    MEASURED[label] = seconds / rows * 1e6
    print(
        f"{label:<{LABEL_WIDTH}}{seconds:8.2f}s {rows / seconds:>12,.0f} rows/s {seconds / rows * 1e6:8.1f} us/row",
        flush=True,
    )
    return result


READ_LABEL = "read: read_chunks (the operator's reader) -> DataFrames"
BUILD_LABEL = "build_events (validate + PII + encode), one cache for the run"
PII_LABEL = "  hash_user_fields alone, one cache for the run"
WARM_BUILD_LABEL = "build_events again, the run's phones known"
WARM_PII_LABEL = "  hash_user_fields again, the run's phones known"
BODY_LABEL = "encode: join the encoded events into 1,000-event bodies (encode_body)"
SEND_LABEL = "fast sink: GravityClient.send_events (encode+POST+match), 4 threads"


def stage_figures() -> dict[str, float]:
    """Each stage of issue 18's floor table, in microseconds per row, from what was timed."""
    figures = {"read": MEASURED[READ_LABEL]}
    if PII_LABEL in MEASURED:
        figures["PII"] = MEASURED[PII_LABEL]
        figures["encode"] = MEASURED[WARM_BUILD_LABEL] - MEASURED[WARM_PII_LABEL] + MEASURED[BODY_LABEL]
    if SEND_LABEL in MEASURED:
        figures["send"] = MEASURED[SEND_LABEL]
    return figures


def post_bodies(url: str, headers: dict[str, str], bodies: Sequence[bytes], threads: int) -> None:
    """POST every body on keep-alive ``requests`` sessions, one per thread."""
    sessions = threading.local()

    def post(body: bytes) -> None:
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        sessions.session.post(url, data=body, headers=headers, timeout=60).raise_for_status()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, bodies))


def send_with_client(client: GravityClient, batches: Sequence[Sequence[Any]], threads: int) -> None:
    """Send every batch with the provider's client, as the pipeline's sending threads do."""

    def send(batch: Sequence[Any]) -> None:
        results = client.send_events(batch)
        if not all(result.delivered for result in results):
            raise RuntimeError("the fast sink did not acknowledge every event")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, batches))


def read_frames(rows: int, chunk_size: int) -> list:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    os.environ.setdefault("AIRFLOW_CONN_WAREHOUSE", warehouse.airflow_connection_json())
    hook = PostgresHook(postgres_conn_id="warehouse")
    sql = warehouse.OPERATOR_SQL.replace("%(rows)s", str(rows))
    frames = timed(
        READ_LABEL,
        rows,
        lambda: list(read_chunks(hook, sql, None, chunk_size)),
    )
    for frame in frames:
        frame.columns = normalize_column_names(frame.columns)
    return frames


def profile_events(frames: list, rows: int) -> list[list[Any]]:
    """Time event building; return the events in batches of 1,000, as the pipeline hands them to the client."""
    settings = EventSettings(event_name="Purchase", action_source="physical_store")
    now = time.time()
    shared = PiiCache()
    built = timed(
        BUILD_LABEL,
        rows,
        lambda: [build_events(frame, settings, now, shared) for frame in frames],
    )
    timed(
        "build_events, a cache per chunk",
        rows,
        lambda: [build_events(frame, settings, now, PiiCache()) for frame in frames],
    )
    try:
        from airflow_provider_gravity.conversions.pii.user_fields import garbage_collection_paused, hash_user_fields
    except ImportError:
        pass
    else:
        cache = PiiCache()

        def hash_all() -> list[Any]:
            with garbage_collection_paused():  # as build_events runs it: a collection would rescan the cache
                return [hash_user_fields(frame, cache=cache) for frame in frames]

        timed(PII_LABEL, rows, hash_all)
        # Encoding is what building adds to the PII step: both timed again with the run's phones known, so
        # that the parsing of phones seen for the first time (most of them on these rows) is in neither.
        timed(WARM_BUILD_LABEL, rows, lambda: [build_events(frame, settings, now, shared) for frame in frames])
        timed(WARM_PII_LABEL, rows, hash_all)
    # The events as the pipeline hands them to the client: encoded by build_events.
    events = [
        event
        for chunk in built
        for event in chunk.encoded_events([row for row, text in enumerate(chunk.encoded) if text is not None])
    ]
    return [events[start : start + BATCH] for start in range(0, len(events), BATCH)]


def profile_naive(rows: int) -> None:
    with psycopg2.connect(warehouse.DEFAULT_DSN) as connection, connection.cursor("profile") as cursor:
        cursor.itersize = 5_000
        cursor.execute(naive_baseline.BASELINE_SQL, {"rows": rows})
        tuples = timed("naive: psycopg2 named cursor fetch", rows, cursor.fetchall)
    naive_events = timed(
        "naive: per-row phonenumbers + hashlib + dict",
        rows,
        lambda: [naive_baseline.row_to_event(row) for row in tuples],
    )
    timed(
        "naive: json.dumps per 1,000",
        rows,
        lambda: [json.dumps({"data": naive_events[i : i + BATCH]}) for i in range(0, rows, BATCH)],
    )


def profile_fast_sink(rows: int, bodies: list[bytes], batches: list[list[Any]], server: str) -> None:
    with FastSink(server=server) as sink:
        url, headers = sink.url + "/gateway/events", {**sink.auth_headers(), "Content-Type": "application/json"}
        for threads in (1, 4):
            sink.reset()
            label = f"fast sink ({server}): POST the bodies, {threads} thread{'s' * (threads > 1)}"
            timed(label, rows, lambda threads=threads: post_bodies(url, headers, bodies, threads))
            stats = sink.stats()
            cpu = stats["cpu_seconds"] / max(1, stats["events"]) * 1e6
            print(f"  of which the fast sink's own CPU: {cpu:.2f} us/event (10 ms clock ticks)")
        sink.reset()
        client = GravityClient(sink.url, sink.api_key, pool_size=4)
        try:
            timed(
                SEND_LABEL,
                rows,
                lambda: send_with_client(client, batches, 4),
            )
        finally:
            client.close()


def profile_sandbox(rows: int, bodies: list[bytes]) -> None:
    with SandboxServer(extra_args=["--no-store-events", "--log-level", "warning"]) as sandbox:
        url, headers = sandbox.url + "/gateway/events", {**sandbox.auth_headers(), "Content-Type": "application/json"}
        timed("sandbox: POST the bodies, 1 thread", rows, lambda: post_bodies(url, headers, bodies, 1))
        sandbox.reset()
        timed("sandbox: POST the bodies, 4 threads", rows, lambda: post_bodies(url, headers, bodies, 4))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--sink-server", choices=("asyncio", "threaded"), default="asyncio")
    parser.add_argument("--skip-sandbox", action="store_true")
    args = parser.parse_args()
    rows = args.rows
    frames = read_frames(rows, args.chunk_size)
    batches = profile_events(frames, rows)
    del frames
    bodies = timed(
        BODY_LABEL,
        rows,
        lambda: [encode_body(batch) for batch in batches],
    )
    profile_naive(rows)
    profile_fast_sink(rows, bodies, batches, args.sink_server)
    if not args.skip_sandbox:
        profile_sandbox(rows, bodies)
    print(STAGES_PREFIX + json.dumps(stage_figures()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
