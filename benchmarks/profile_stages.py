"""Where the time of one run goes: each stage of the operator's path timed alone on the same rows.

Run after ``bench_e2e.py`` has loaded the table: ``.venv/bin/python benchmarks/profile_stages.py --rows 200000``.
Stages: reading chunks from PostgreSQL; ``build_events`` (validation, PII, event dicts) as the pipeline
calls it but with a per-chunk PII cache; ``hash_user_fields`` alone with a per-chunk cache and with one
cache shared by the run (as the pipeline now passes it); JSON encoding of 1,000-event bodies as the client
does it; the sandbox's own throughput for those bodies, sequential and with 4 threads; and the naive
loop's per-row work.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR.parent), str(BENCH_DIR)]

import naive_baseline  # noqa: E402
import psycopg2  # noqa: E402
import requests  # noqa: E402
import sqlalchemy  # noqa: E402
import warehouse  # noqa: E402

from airflow_provider_gravity.conversions.api.client import encode_body  # noqa: E402
from airflow_provider_gravity.conversions.read.columns import normalize_column_names  # noqa: E402
from airflow_provider_gravity.conversions.events.build import EventSettings, build_events  # noqa: E402
from airflow_provider_gravity.conversions.pii.user_fields import PiiCache, hash_user_fields  # noqa: E402
from airflow_provider_gravity.conversions.read.chunks import stream_query  # noqa: E402
from tests.support.sandbox_server import SandboxServer  # noqa: E402


def timed(label: str, rows: int, function):
    started = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - started
    print(f"{label:<58}{seconds:8.2f}s {rows / seconds:>12,.0f} rows/s {seconds / rows * 1e6:8.1f} us/row")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    args = parser.parse_args()
    rows = args.rows
    engine = sqlalchemy.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    sql = warehouse.OPERATOR_SQL.replace("%(rows)s", str(rows))
    frames = timed(
        "read: stream_query -> DataFrames", rows, lambda: list(stream_query(engine, sql, None, args.chunk_size))
    )
    for frame in frames:
        frame.columns = normalize_column_names(frame.columns)
    settings = EventSettings(event_name="Purchase", action_source="physical_store")
    now = time.time()
    built = timed(
        "build_events (validate + PII + dicts), cache per chunk",
        rows,
        lambda: [build_events(frame, settings, now) for frame in frames],
    )
    timed("  hash_user_fields, cache per chunk", rows, lambda: [hash_user_fields(frame) for frame in frames])
    shared = PiiCache()
    timed(
        "  hash_user_fields, one cache for the run (pipeline)",
        rows,
        lambda: [hash_user_fields(frame, cache=shared) for frame in frames],
    )
    events = [event for chunk in built for event in chunk.events if event is not None]

    def encode():
        return [encode_body(events[i : i + 1000]) for i in range(0, len(events), 1000)]

    bodies = timed("JSON encoding of 1,000-event bodies (the client's encode_body)", rows, encode)

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
        lambda: [json.dumps({"data": naive_events[i : i + 1000]}) for i in range(0, rows, 1000)],
    )

    with SandboxServer(extra_args=["--no-store-events", "--log-level", "warning"]) as sandbox:
        url, headers = sandbox.url + "/gateway/events", {**sandbox.auth_headers(), "Content-Type": "application/json"}
        session = requests.Session()
        timed(
            "sandbox: POST the bodies, 1 connection, sequential",
            rows,
            lambda: [session.post(url, data=b, headers=headers).raise_for_status() for b in bodies],
        )
        sandbox.reset()

        sessions = threading.local()

        def post(body: bytes) -> None:
            if not hasattr(sessions, "session"):
                sessions.session = requests.Session()
            sessions.session.post(url, data=body, headers=headers, timeout=60).raise_for_status()

        with ThreadPoolExecutor(4) as pool:
            timed("sandbox: POST the bodies, 4 threads", rows, lambda: list(pool.map(post, bodies)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
