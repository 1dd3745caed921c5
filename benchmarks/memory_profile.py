"""Where the operator's memory goes: one operator task (default arguments) against the fast sink, measured.

Run from the repository root (PostgreSQL holding ``gravity_bench.orders``, see ``warehouse.py``)::

    .venv/bin/python benchmarks/memory_profile.py --rows 1000000
    .venv/bin/python benchmarks/memory_profile.py --rows 1000000 --tracemalloc   # Python's own allocations too
    .venv/bin/python benchmarks/memory_profile.py --rows 1000000 --without seen_keys   # one part left out

Prints, every ``--every`` chunks, the process's RSS and its peak so far, Arrow's pool (bytes allocated now and
at most), the in-run dedup's memory (``SeenKeys.memory_bytes``), the phone table's entries and, with
``--tracemalloc``, the bytes Python and numpy hold now and at most since the last line; at the end the peak
RSS, the peak of the same task over an empty result (run first, in its own process) and their difference, the
operator's own peak. ``--without`` replaces one part by a stand-in that keeps nothing, to see what it costs
(the run's output is then no longer the operator's: for measuring only):

- ``seen_keys``: every key is new (the benchmark's keys are distinct, so the events sent are the same);
- ``phone_cache``: the phone table forgets every phone after each chunk;
- ``sending``: batches are answered at once without HTTP (the fast sink still runs, unused).

``--arrow-pool system`` (or ``jemalloc``, ``mimalloc``) sets Arrow's default pool at the worker's start, as
``ARROW_DEFAULT_MEMORY_POOL`` does; ``--arrow-release`` hands the pool's unused memory back to the system
after each chunk (``MemoryPool.release_unused``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for path in (str(REPO_ROOT), str(BENCH_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)

import warehouse  # noqa: E402
from fast_sink import FastSink  # noqa: E402

RESULT_PREFIX = "MEMORY-RESULT "
PARTS = ("seen_keys", "phone_cache", "sending")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=10, help="chunks between two lines")
    parser.add_argument("--tracemalloc", action="store_true", help="trace Python's allocations (slower)")
    parser.add_argument("--without", choices=PARTS, action="append", default=[], help="leave one part out")
    parser.add_argument("--arrow-pool", choices=("system", "jemalloc", "mimalloc"), help="Arrow's default pool")
    parser.add_argument("--arrow-release", action="store_true", help="release the pool's unused memory each chunk")
    parser.add_argument("--no-empty", action="store_true", help="skip the empty run (the baseline)")
    parser.add_argument("--dsn", default=warehouse.DEFAULT_DSN)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _leave_out(parts: list[str]) -> None:
    from airflow_provider_gravity.conversions.run import pipeline

    if "seen_keys" in parts:

        class _EveryKeyNew:
            memory_bytes = 0

            def first_occurrences_of(self, *columns: Any) -> list[bool]:
                return [True] * len(columns[0])

        original_init = pipeline.ConversionPipeline.__init__

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            self.seen = _EveryKeyNew()

        pipeline.ConversionPipeline.__init__ = init  # type: ignore[method-assign]
    if "phone_cache" in parts:
        original_process = pipeline.ConversionPipeline._process_chunk

        def process(self: Any, *args: Any) -> None:
            original_process(self, *args)
            self.pii_cache = pipeline.PiiCache(max_entries=pipeline.PII_CACHE_ENTRIES)

        pipeline.ConversionPipeline._process_chunk = process  # type: ignore[method-assign]
    if "sending" in parts:
        from airflow_provider_gravity.conversions.api.outcomes import _DELIVERED_OK

        def send_with_split(send: Any, events: list[Any]) -> tuple[list[Any], None]:
            return [_DELIVERED_OK] * len(events), None

        pipeline.send_with_split = send_with_split  # type: ignore[assignment]


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow as pa

    from airflow_provider_gravity.conversions.run import pipeline
    from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator

    if args.arrow_pool:
        pa.set_memory_pool(getattr(pa, f"{args.arrow_pool}_memory_pool")())
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start()
    _leave_out(args.without)
    pool = pa.default_memory_pool()
    lines: list[str] = []
    sampled = {"rss": 0.0, "chunk": -1}
    chunk = {"index": 0}
    stop = threading.Event()

    def sample() -> None:  # RSS every 2 ms: where in the run the peak is
        while not stop.wait(0.002):
            rss = _rss_mb()
            if rss > sampled["rss"]:
                sampled["rss"], sampled["chunk"] = rss, chunk["index"]

    original_process = pipeline.ConversionPipeline._process_chunk

    def process(self: Any, index: int, *rest: Any) -> None:
        chunk["index"] = index
        original_process(self, index, *rest)
        if args.arrow_release:
            pool.release_unused()
        if index % args.every:
            return
        line = (
            f"chunk {index:5d}  rss {_rss_mb():6.1f} MB  peak {_peak_rss_mb():6.1f} MB  "
            f"arrow {pool.bytes_allocated() / 2**20:5.1f}/{pool.max_memory() / 2**20:5.1f} MB  "
            f"seen {getattr(self.seen, 'memory_bytes', 0) / 2**20:5.1f} MB  phones {self.pii_cache.entries:7,d}"
        )
        if args.tracemalloc:
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            line += f"  python {current / 2**20:6.1f}/{peak / 2**20:6.1f} MB"
        print(line, flush=True)
        lines.append(line)

    pipeline.ConversionPipeline._process_chunk = process  # type: ignore[method-assign]
    operator = SendConversionsOperator(
        task_id="memory_profile",
        sql=warehouse.OPERATOR_SQL.replace("%(rows)s", str(int(args.rows))),
        conn_id="warehouse",
        event_name="Purchase",
        action_source="physical_store",
        max_error_rate=1.0,
        progress_interval=3600.0,
    )
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    summary = operator.execute(context={})
    seconds = time.monotonic() - started
    stop.set()
    sampler.join()
    return {
        "rows": summary["rows_read"],
        "delivered": summary["delivered"],
        "seconds": seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_chunk": sampled["chunk"],
        "arrow_max_mb": pool.max_memory() / 2**20,
        "arrow_backend": pool.backend_name,
    }


def _run(rows: int, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    import bench_e2e

    with FastSink(server="asyncio").start() as sink:
        env = bench_e2e._worker_env(sink.url, sink.api_key, args.dsn)
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--rows", str(rows), "--dsn", args.dsn]
        command += ["--every", str(args.every), *extra]
        completed = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True, check=True)
    for line in completed.stdout.splitlines():
        if not line.startswith(RESULT_PREFIX):
            print(line)
    result: dict[str, Any] = json.loads(
        next(line for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX))[len(RESULT_PREFIX) :]
    )
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker:
        print(RESULT_PREFIX + json.dumps(run_worker(args)), flush=True)
        return 0
    extra = [*(["--tracemalloc"] if args.tracemalloc else []), *(f"--without={part}" for part in args.without)]
    extra += [*([f"--arrow-pool={args.arrow_pool}"] if args.arrow_pool else [])]
    extra += [*(["--arrow-release"] if args.arrow_release else [])]
    empty = None if args.no_empty else _run(0, args, extra)
    result = _run(args.rows, args, extra)
    print(
        f"{result['rows']:,} rows in {result['seconds']:.1f} s ({result['rows'] / result['seconds']:,.0f} rows/s), "
        f"{result['delivered']:,} delivered; peak RSS {result['peak_rss_mb']:.1f} MB (reached in chunk "
        f"{result['peak_chunk']}), Arrow pool ({result['arrow_backend']}) at most {result['arrow_max_mb']:.1f} MB"
    )
    if empty is not None:
        own = result["peak_rss_mb"] - empty["peak_rss_mb"]
        print(f"empty result: peak RSS {empty['peak_rss_mb']:.1f} MB; the operator's own: {own:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
