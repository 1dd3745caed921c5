"""End-to-end benchmark: PostgreSQL -> SendConversionsOperator -> a fast local sink, against the naive loop.

Run from the repository root with ``make bench`` or ``.venv/bin/python benchmarks/bench_e2e.py``; add
``--skip-large`` to leave out the 10 M-row run, ``--rows 100000 --skip-large --no-write`` for a quick check.

1. Loads ``gravity_bench.orders`` in the local PostgreSQL with ``COPY`` (re-used when already loaded).
2. Runs each configuration in its own subprocess, so each peak RSS is its own, on the same rows:
   (a) the operator with its default ``chunk_size``/``max_concurrency`` -> the fast sink over HTTP;
   (e) the same with ``adbc-driver-postgresql`` hidden, as ``pip install`` without the ``[arrow]`` extra
       leaves it: the DB-API cursor path;
   (b) the operator with tuned ones (``--chunk-size``, ``--max-concurrency``) -> the fast sink;
   (c) the operator (tuned) -> the sandbox over HTTP;
   (d) the naive per-row loop of a PythonOperator (``naive_baseline.py``) -> the fast sink.
   Each HTTP configuration gets a fresh server (``fast_sink.py``, or the sandbox with ``--no-store-events``),
   whose counters check that every row arrived once.
3. Memory and linear cost: the operator's own peak is the peak RSS of (a) minus that of the same task over an
   empty result (the same query, ``seq <= 0``), at ``--rows`` and at ``--rows-large`` (10 M); rows/s of the
   two runs are compared too.
4. Transform: ``build_events`` (validation, PII, encoding; no I/O) over every chunk of the rows, read first
   and untimed, with one ``PiiCache`` for the run as the pipeline has.
5. Each stage timed alone (``profile_stages.py``), written beside the floor issue 18 measured (``floors.py``).
6. Writes the figures, the machine and the command to ``benchmarks/RESULTS.md``, between this script's own
   markers: every other section of the file is kept.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for path in (str(REPO_ROOT), str(BENCH_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)

import warehouse  # noqa: E402
from fast_sink import FastSink  # noqa: E402
from floors import PROTOTYPE_ROWS_PER_SECOND, PROTOTYPE_SPEEDUP, STAGE_FLOORS  # noqa: E402

SANDBOX_ARGS = ["--no-store-events", "--log-level", "warning"]
RESULT_PREFIX = "BENCH-RESULT "
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d")
BEGIN_MARKER = "<!-- bench_e2e.py: begin (generated; edit outside these markers) -->"
END_MARKER = "<!-- bench_e2e.py: end -->"
STAGES_PREFIX = "STAGES-JSON "
COMPARISON = ("default", "cursor", "tuned", "sandbox", "naive")
OPERATOR_CONFIGS = ("default", "cursor", "tuned", "sandbox", "null", "empty")
#: Configurations that run with the operator's own defaults.
DEFAULT_ARGS_CONFIGS = ("default", "cursor", "empty")
#: Configurations whose events go to the fast sink.
FAST_SINK_CONFIGS = ("default", "cursor", "tuned", "naive", "empty")
#: The driver a plain ``pip install`` (without the ``[arrow]`` extra) does not have.
ARROW_EXTRA_DRIVER = "adbc_driver_postgresql"
SPEEDUP_TARGET = 10.0
CURSOR_SPEEDUP_TARGET = 5.0
TRANSFORM_TARGET = 500_000
MEMORY_TARGET_MB = 100.0
MEMORY_GROWTH_TARGET = 0.10
LINEAR_COST_TARGET = 0.10


def operator_defaults() -> dict[str, int]:
    """The operator's own ``chunk_size`` and ``max_concurrency`` defaults (what a new user gets)."""
    from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator

    parameters = inspect.signature(SendConversionsOperator.__init__).parameters
    return {name: parameters[name].default for name in ("chunk_size", "max_concurrency")}


def config_label(config: str, args: argparse.Namespace) -> str:
    tuned = f"chunk_size={args.chunk_size:,}, max_concurrency={args.max_concurrency}"
    return {
        "default": "(a) operator, default args -> fast sink (HTTP)",
        "cursor": "(e) operator, default args, no [arrow] extra (cursor path) -> fast sink (HTTP)",
        "tuned": f"(b) operator, {tuned} -> fast sink (HTTP)",
        "sandbox": f"(c) operator, {tuned} -> sandbox (HTTP)",
        "naive": "(d) naive per-row loop -> fast sink (HTTP)",
        "null": f"operator, {tuned} -> null sink (no HTTP)",
        "empty": "operator, default args, empty result -> fast sink",
    }[config]


@dataclass
class Measurement:
    config: str
    rows: int
    seconds: float
    peak_rss_mb: float
    delivered: int
    note: str = ""
    checks_passed: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the comparison (default 1,000,000)")
    parser.add_argument(
        "--rows-large", type=int, default=10_000_000, help="rows of the memory and linear-cost check (default 10 M)"
    )
    parser.add_argument(
        "--skip-large", "--skip-5m", dest="skip_large", action="store_true", help="skip the run at --rows-large"
    )
    parser.add_argument("--customers", type=int, default=200_000, help="distinct customers (default 200,000)")
    parser.add_argument("--chunk-size", type=int, default=50_000, help="tuned chunk_size, (b) and (c) (50,000)")
    parser.add_argument("--max-concurrency", type=int, default=4, help="tuned max_concurrency, (b) and (c) (4)")
    parser.add_argument(
        "--baseline-time-limit",
        type=float,
        default=300.0,
        help="stop the naive baseline after this many seconds and report the rows it did (default 300)",
    )
    parser.add_argument(
        "--configs",
        default=",".join(COMPARISON),
        help="comma-separated subset of default,cursor,tuned,sandbox,naive,null (default: all but null)",
    )
    parser.add_argument("--sink-server", choices=("asyncio", "threaded"), default="asyncio", help="fast sink server")
    parser.add_argument("--skip-transform", action="store_true", help="skip the transform rows/s")
    parser.add_argument(
        "--stages-rows",
        type=int,
        default=200_000,
        help="rows for the per-stage timing (profile_stages.py) written to the report; 0 to skip",
    )
    parser.add_argument("--dsn", default=warehouse.DEFAULT_DSN, help="libpq DSN of the warehouse")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md", help="where to write")
    parser.add_argument("--no-write", action="store_true", help="print the results without writing the file")
    parser.add_argument("--worker", choices=(*OPERATOR_CONFIGS, "naive", "transform"), help=argparse.SUPPRESS)
    parser.add_argument("--sink-url", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- workers (one per subprocess)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _operator_sql(rows: int) -> str:
    return warehouse.OPERATOR_SQL.replace("%(rows)s", str(int(rows)))


def _build_operator(args: argparse.Namespace):
    from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator

    operator_class = SendConversionsOperator
    if args.worker == "null":
        from null_sink import NullSinkSendConversionsOperator

        operator_class = NullSinkSendConversionsOperator
    tuned = {}
    if args.worker not in DEFAULT_ARGS_CONFIGS:  # (a), (e) and the empty run: the operator's own defaults
        tuned = {"chunk_size": args.chunk_size, "max_concurrency": args.max_concurrency}
    return operator_class(
        task_id="bench_send_conversions",
        sql=_operator_sql(0 if args.worker == "empty" else args.rows),
        conn_id="warehouse",
        event_name="Purchase",
        action_source="physical_store",
        max_error_rate=1.0,
        progress_interval=30.0,
        **tuned,
    )


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    if args.worker == "naive":
        import naive_baseline

        outcome = naive_baseline.run_baseline(
            args.dsn, args.sink_url, os.environ["GRAVITY_BENCH_API_KEY"], args.rows, args.baseline_time_limit
        )
        return {**outcome, "delivered": outcome["accepted"], "peak_rss_mb": _peak_rss_mb()}
    if args.worker == "transform":
        return run_transform(args)
    if args.worker == "cursor":
        # What a missing module gives: importlib.util.find_spec answers None, so no Arrow source offers itself.
        sys.modules[ARROW_EXTRA_DRIVER] = None  # type: ignore[assignment]
    operator = _build_operator(args)
    import_seconds = _load_run_modules(args.worker)
    started = time.monotonic()
    summary = operator.execute(context={})
    seconds = time.monotonic() - started
    return {
        "rows": summary["rows_read"],
        "seconds": seconds,
        "import_seconds": import_seconds,
        "delivered": summary["delivered"],
        "summary": summary,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _load_run_modules(worker: str) -> float:
    """
    Import what ``execute`` imports on first use (the pipeline, pandas, pyarrow; the ADBC driver unless the cursor path
    is measured) and return the seconds it took: the naive loop imports its libraries before its clock starts too, so
    both figures are the run alone. Once per task process, whatever the rows; the report gives it beside the figure.
    """
    started = time.monotonic()
    importlib.import_module("airflow_provider_gravity.conversions.run.pipeline")
    if worker != "cursor" and importlib.util.find_spec(ARROW_EXTRA_DRIVER) is not None:
        importlib.import_module(ARROW_EXTRA_DRIVER + ".dbapi")
    return time.monotonic() - started


def run_transform(args: argparse.Namespace) -> dict[str, Any]:
    """``build_events`` over every chunk of ``args.rows`` rows, read first (untimed), one PII cache for the run."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from airflow_provider_gravity.conversions.events.build import EventSettings, build_events
    from airflow_provider_gravity.conversions.pii.user_fields import PiiCache
    from airflow_provider_gravity.conversions.read.chunks import read_chunks
    from airflow_provider_gravity.conversions.read.columns import normalize_column_names

    try:
        from airflow_provider_gravity.conversions.run.pipeline import PII_CACHE_ENTRIES

        cache = PiiCache(max_entries=PII_CACHE_ENTRIES)
    except ImportError:
        cache = PiiCache()
    chunk_size = operator_defaults()["chunk_size"]
    read_started = time.monotonic()
    frames = list(read_chunks(PostgresHook(postgres_conn_id="warehouse"), _operator_sql(args.rows), None, chunk_size))
    read_seconds = time.monotonic() - read_started
    for frame in frames:
        frame.columns = normalize_column_names(frame.columns)
    settings = EventSettings(event_name="Purchase", action_source="physical_store")
    now = time.time()
    built = []
    started = time.perf_counter()
    for frame in frames:
        built.append(build_events(frame, settings, now, cache))
    seconds = time.perf_counter() - started
    return {
        "rows": sum(len(frame) for frame in frames),
        "seconds": seconds,
        "events": sum(text is not None for chunk in built for text in chunk.encoded),
        "chunk_size": chunk_size,
        "chunks": len(frames),
        "read_seconds": read_seconds,
        "peak_rss_mb": _peak_rss_mb(),
    }


# --------------------------------------------------------------------------- orchestration


def _worker_env(sink_url: str | None, api_key: str, dsn: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["AIRFLOW_CONN_WAREHOUSE"] = warehouse.airflow_connection_json(dsn)
    env["AIRFLOW_CONN_GRAVITY_DEFAULT"] = json.dumps(
        {"conn_type": "gravity", "host": sink_url or "http://127.0.0.1:9", "password": api_key}
    )
    env["GRAVITY_BENCH_API_KEY"] = api_key
    return env


def _run_subprocess(config: str, rows: int, args: argparse.Namespace, server: Any) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", config, "--rows", str(rows)]
    command += ["--chunk-size", str(args.chunk_size), "--max-concurrency", str(args.max_concurrency)]
    command += ["--baseline-time-limit", str(args.baseline_time_limit), "--dsn", args.dsn]
    if server is not None:
        command += ["--sink-url", server.url]
    env = _worker_env(server.url if server else None, server.api_key if server else "unused", args.dsn)
    with tempfile.TemporaryFile(mode="w+") as worker_log:
        completed = subprocess.run(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=worker_log, text=True, check=False
        )
        if completed.returncode != 0:
            worker_log.seek(0)
            tail = "\n".join(worker_log.read().splitlines()[-40:])
            raise RuntimeError(f"{config} worker failed with code {completed.returncode}:\n{tail}")
    result_lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    return json.loads(result_lines[-1][len(RESULT_PREFIX) :])


def _start_server(config: str, args: argparse.Namespace) -> Any:
    if config in FAST_SINK_CONFIGS:
        return FastSink(server=args.sink_server).start()
    if config == "sandbox":
        from airflow_provider_gravity.sandbox.launcher import SandboxServer

        return SandboxServer(extra_args=SANDBOX_ARGS, cwd=REPO_ROOT).start()
    return None


def _stop_server(server: Any) -> None:
    if isinstance(server, FastSink):
        server.__exit__(None, None, None)
    elif server is not None:
        server.close()


def _check_delivery(config: str, result: dict[str, Any], server: Any) -> tuple[str, bool]:
    """The server's view of the run, and whether every event the run counts as delivered arrived once."""
    if server is None:
        return "", True
    stats = server.stats()
    delivered = result["delivered"]
    if isinstance(server, FastSink):
        once = stats["events"] == stats["unique_events"] == delivered and stats["repeated_events"] == 0
        cpu = stats["cpu_seconds"]
        per_event = f", {cpu / stats['events'] * 1e6:.2f} us CPU/event" if stats["events"] else ""
        note = f"sink: {stats['unique_events']:,} distinct of {stats['events']:,} events in {stats['requests']:,} "
        note += f"requests; sink CPU {cpu:.1f}s{per_event}"
    else:
        ok = stats["by_status"].get("ok", 0)
        once = ok == stats["unique_events"] == delivered and stats["max_deliveries_of_one_event"] <= 1
        note = f"sandbox: {ok:,} ok in {stats['requests']:,} requests, plaintext PII seen {stats['plaintext_pii_seen']}"
        once = once and stats["plaintext_pii_seen"] == 0
    if config != "naive" and config != "empty":
        summary = result.get("summary", {})
        once = once and delivered + summary.get("invalid", 0) == result["rows"]
    if not once:
        note += "; **CHECK FAILED: not every row arrived exactly once**"
    return note, once


def run_config(config: str, rows: int, args: argparse.Namespace) -> Measurement:
    label = config_label(config, args)
    print(f"-> {label} on {rows:,} rows ...", flush=True)
    server = _start_server(config, args)
    try:
        result = _run_subprocess(config, rows, args, server)
        note, passed = _check_delivery(config, result, server)
    finally:
        _stop_server(server)
    if result.get("stopped_early"):
        note += f"; stopped by the {args.baseline_time_limit:g}s limit after the first {result['rows']:,} rows"
    if "import_seconds" in result:
        note += f"; modules loaded before the clock in {result['import_seconds']:.1f}s"
    measurement = Measurement(
        config, result["rows"], result["seconds"], result["peak_rss_mb"], result["delivered"], note, passed
    )
    print(
        f"   {measurement.rows:,} rows in {measurement.seconds:.1f}s = {measurement.rows_per_second:,.0f} rows/s, "
        f"peak RSS {measurement.peak_rss_mb:,.0f} MB, delivered {measurement.delivered:,}. {note}",
        flush=True,
    )
    return measurement


def run_transform_config(rows: int, args: argparse.Namespace) -> Measurement:
    print(f"-> transform (build_events, no I/O) on {rows:,} rows ...", flush=True)
    result = _run_subprocess("transform", rows, args, None)
    note = (
        f"chunk_size={result['chunk_size']:,} ({result['chunks']} chunks, read first in {result['read_seconds']:.1f}s, "
        f"untimed); {result['events']:,} events built"
    )
    measurement = Measurement("transform", result["rows"], result["seconds"], result["peak_rss_mb"], 0, note)
    print(f"   {measurement.rows_per_second:,.0f} rows/s in {measurement.seconds:.2f}s; {note}", flush=True)
    return measurement


# --------------------------------------------------------------------------- report


def machine_description() -> dict[str, str]:
    import pandas
    import phonenumbers

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    versions = {}
    for module in ("airflow", "pyarrow", "adbc_driver_postgresql", "msgspec"):
        try:
            versions[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            versions[module] = "not installed"
    return {
        "CPU": cpu,
        "cores (nproc)": str(os.cpu_count()),
        "RAM": f"{ram_gb:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Airflow": versions["airflow"],
        "pandas": pandas.__version__,
        "pyarrow": versions["pyarrow"],
        "adbc-driver-postgresql": versions["adbc_driver_postgresql"],
        "msgspec": versions["msgspec"],
        "phonenumbers": phonenumbers.__version__,
        "PostgreSQL": _postgres_version(),
    }


def _postgres_version() -> str:
    import psycopg2

    with psycopg2.connect(warehouse.DEFAULT_DSN) as connection, connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0]


def run_stage_profile(rows: int, chunk_size: int) -> tuple[str, dict[str, float]]:
    """The output of ``profile_stages.py`` (each stage of the path timed alone), and each stage's us/row."""
    print(f"-> timing each stage alone on {rows:,} rows ...", flush=True)
    command = [sys.executable, str(BENCH_DIR / "profile_stages.py"), "--rows", str(rows)]
    command += ["--chunk-size", str(chunk_size)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        return f"stage timing failed:\n{completed.stderr[-2000:]}", {}
    lines = completed.stdout.splitlines()
    figures = [json.loads(line[len(STAGES_PREFIX) :]) for line in lines if line.startswith(STAGES_PREFIX)]
    # Airflow's logging writes to stdout too: keep the stage lines only.
    kept = [line for line in lines if not LOG_LINE.match(line) and not line.startswith(STAGES_PREFIX)]
    return "\n".join(kept).strip(), (figures[-1] if figures else {})


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


@dataclass
class Figures:
    """Everything one run measured."""

    comparison: list[Measurement]
    memory: list[Measurement]
    empty: Measurement | None
    transform: Measurement | None
    stages: str | None
    stage_figures: dict[str, float] = field(default_factory=dict)


def _throughput_lines(figures: Figures, args: argparse.Namespace) -> list[str]:
    defaults = operator_defaults()
    lines = [
        f"## Throughput on the same {args.rows:,} PostgreSQL rows",
        "",
        f"{args.customers:,} distinct customers; batches of 1,000 events. Default args are the operator's own "
        f"(`chunk_size={defaults['chunk_size']:,}`, `max_concurrency={defaults['max_concurrency']}`). Seconds "
        "cover the run itself (query to last response), not interpreter start-up nor loading the libraries: the "
        "operator's first `execute` imports pandas, pyarrow and the ADBC driver, the naive loop imports its own at "
        "start-up, and both are loaded before the clock starts (the note gives the operator's time; once a task). "
        "Peak RSS is each "
        "configuration's own process (`ru_maxrss`); the fast sink and the sandbox are separate processes on "
        f"the same machine. The fast sink (`benchmarks/fast_sink.py`, `{args.sink_server}` server) decodes only "
        "each event's `event_id` and answers `ok`; its counters check that every row arrived once.",
        "",
        "| configuration | rows | seconds | rows/s | peak RSS MB | delivered | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for m in figures.comparison:
        lines.append(
            f"| {config_label(m.config, args)} | {m.rows:,} | {m.seconds:,.1f} | {m.rows_per_second:,.0f} | "
            f"{m.peak_rss_mb:,.0f} | {m.delivered:,} | {m.note} |"
        )
    by_config = {m.config: m for m in figures.comparison}
    naive = by_config.get("naive")
    if naive and naive.rows_per_second:
        lines.append("")
        targets = {"default": SPEEDUP_TARGET, "tuned": SPEEDUP_TARGET, "cursor": CURSOR_SPEEDUP_TARGET}
        for config in ("default", "cursor", "tuned", "sandbox", "null"):
            if config in by_config:
                ratio = by_config[config].rows_per_second / naive.rows_per_second
                name = config_label(config, args).split(" ", 1)[0] if config != "null" else "null sink"
                target = ""
                if config in targets:
                    target = f" (target ≥{targets[config]:g}x: {_verdict(ratio >= targets[config])})"
                lines.append(f"- {name} / (d) = **{ratio:.1f}x** (rows/s){target}")
        lines.append(
            f"- issue 18's prototype: {PROTOTYPE_ROWS_PER_SECOND:,} rows/s, {PROTOTYPE_SPEEDUP:g}x its own naive run"
        )
    return lines


def _memory_lines(figures: Figures, args: argparse.Namespace) -> list[str]:
    empty = figures.empty
    if empty is None or not figures.memory:
        return []
    lines = [
        "",
        "## The operator's own peak memory",
        "",
        f"Peak RSS of the task minus the peak RSS of the same task over an empty result "
        f"({config_label('empty', args)}: {empty.peak_rss_mb:,.0f} MB, which holds Python, Airflow, pandas, "
        "pyarrow and the drivers). Target: at most "
        f"{MEMORY_TARGET_MB:g} MB at 1,000,000 rows, and within {MEMORY_GROWTH_TARGET:.0%} of that at "
        f"{args.rows_large:,}; rows/s there within {LINEAR_COST_TARGET:.0%} of rows/s at {args.rows:,} (linear cost).",
        "",
        "| configuration | rows | rows/s | peak RSS MB | operator's own MB |",
        "|---|---:|---:|---:|---:|",
    ]
    own = {}
    speed = {(m.config, m.rows): m.rows_per_second for m in figures.memory}
    for m in figures.memory:
        own[(m.config, m.rows)] = m.peak_rss_mb - empty.peak_rss_mb
        lines.append(
            f"| {config_label(m.config, args)} | {m.rows:,} | {m.rows_per_second:,.0f} | {m.peak_rss_mb:,.0f} | "
            f"{own[(m.config, m.rows)]:,.0f} |"
        )
    lines.append("")
    small = own.get(("default", args.rows))
    if small is not None:
        lines.append(
            f"- default args at {args.rows:,} rows: **{small:,.0f} MB** "
            f"(target ≤{MEMORY_TARGET_MB:g} MB: {_verdict(small <= MEMORY_TARGET_MB)})"
        )
    large = own.get(("default", args.rows_large))
    if small and large is not None:
        growth = large / small - 1
        lines.append(
            f"- default args at {args.rows_large:,} rows: **{large:,.0f} MB**, **{growth:+.1%}** against "
            f"{args.rows:,} (target within {MEMORY_GROWTH_TARGET:.0%}: {_verdict(abs(growth) <= MEMORY_GROWTH_TARGET)})"
        )
    elif large is None:
        lines.append(f"- {args.rows_large:,} rows: not measured in this run (`--skip-large`).")
    small_speed, large_speed = speed.get(("default", args.rows)), speed.get(("default", args.rows_large))
    if small_speed and large_speed:
        change = large_speed / small_speed - 1
        faster = " (rows cost less at scale, not more: the run's phone table is filled in its first rows)"
        lines.append(
            f"- rows/s at {args.rows_large:,} rows against {args.rows:,}: **{change:+.1%}** "
            f"(target within {LINEAR_COST_TARGET:.0%}: {_verdict(abs(change) <= LINEAR_COST_TARGET)})"
            + (faster if change > LINEAR_COST_TARGET else "")
        )
    return lines


def _transform_lines(figures: Figures) -> list[str]:
    m = figures.transform
    if m is None:
        return []
    return [
        "",
        f"## Transform: validation, PII and encoding, no I/O, on {m.rows:,} rows",
        "",
        "`build_events(frame, settings, now, cache)` over every chunk, with one `PiiCache` for the run as the "
        "pipeline has; the chunks are read from PostgreSQL first, as the operator reads them, and not timed.",
        "",
        f"- **{m.rows_per_second:,.0f} rows/s** ({m.seconds:.2f}s; target ≥{TRANSFORM_TARGET:,}: "
        f"{_verdict(m.rows_per_second >= TRANSFORM_TARGET)}); {m.note}.",
    ]


def _floor_lines(stage_figures: dict[str, float], args: argparse.Namespace) -> list[str]:
    lines = [
        f"## Each stage beside its floor ({args.stages_rows:,} rows)",
        "",
        "The floor is issue 18's prototype on this machine (`benchmarks/floors.py`). Ours: read is `read_chunks`; "
        "PII is `hash_user_fields`; encode is the rest of `build_events` (validation and JSON fragments) plus "
        "`encode_body`; send is `GravityClient.send_events` on 4 threads against the fast sink.",
        "",
        "| stage | floor us/row | ours us/row | floor's way |",
        "|---|---:|---:|---|",
    ]
    for floor in STAGE_FLOORS:
        ours = stage_figures.get(floor.stage)
        lines.append(
            f"| {floor.stage} | {floor.floor_us_per_row} | {'-' if ours is None else f'{ours:.2f}'} | {floor.how} |"
        )
    return lines


def render_report(figures: Figures, args: argparse.Namespace, command: str) -> str:
    """The generated part of RESULTS.md, markers included."""
    lines = [
        BEGIN_MARKER,
        "# End-to-end benchmark",
        "",
        f"Generated by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Re-run it to refresh this part "
        "of the file.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in machine_description().items()),
        "",
        f"Load average when the report was written: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"(1, 5, 15 min) on {os.cpu_count()} cores.",
        "",
        *_throughput_lines(figures, args),
        *_memory_lines(figures, args),
        *_transform_lines(figures),
    ]
    if figures.stage_figures:
        lines += ["", *_floor_lines(figures.stage_figures, args)]
    if figures.stages:
        lines += [
            "",
            f"## Where the time goes: each stage timed alone on {args.stages_rows:,} rows",
            "",
            "From `benchmarks/profile_stages.py` (single-threaded unless said, same rows, "
            f"`chunk_size={operator_defaults()['chunk_size']:,}`, the operator's default). The sink lines are the "
            "ceiling of any client against that server on this machine.",
            "",
            "```",
            figures.stages,
            "```",
        ]
    return "\n".join([*lines, END_MARKER]) + "\n"


def merge_report(existing: str, generated: str) -> str:
    """``existing`` with the part between this script's markers replaced; without markers, ours goes first."""
    begin, end = existing.find(BEGIN_MARKER), existing.find(END_MARKER)
    if begin >= 0 and end > begin:
        return existing[:begin] + generated.rstrip("\n") + existing[end + len(END_MARKER) :]
    rest = existing.strip("\n")
    return generated + ("\n" + rest + "\n" if rest else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(RESULT_PREFIX + json.dumps(run_worker(args), default=str), flush=True)
        return 0
    python = Path(sys.executable)
    python_shown = python.relative_to(REPO_ROOT).as_posix() if python.is_relative_to(REPO_ROOT) else str(python)
    command = shlex.join([python_shown, "benchmarks/bench_e2e.py", *(argv if argv is not None else sys.argv[1:])])
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    largest = args.rows if args.skip_large else max(args.rows, args.rows_large)
    warehouse.ensure_rows(largest, customers=args.customers, dsn=args.dsn)
    comparison = [run_config(config, args.rows, args) for config in configs]
    empty = None
    memory = [m for m in comparison if m.config in ("default", "tuned")]
    if memory:
        empty = run_config("empty", 0, args)
        if not args.skip_large and "default" in configs:
            memory.append(run_config("default", args.rows_large, args))
    transform = None if args.skip_transform else run_transform_config(args.rows, args)
    stages, stage_figures = None, {}
    if args.stages_rows:
        stages, stage_figures = run_stage_profile(args.stages_rows, operator_defaults()["chunk_size"])
    figures = Figures(comparison, memory, empty, transform, stages, stage_figures)
    report = render_report(figures, args, command)
    print()
    print(report)
    if not args.no_write:
        existing = args.results.read_text() if args.results.exists() else ""
        args.results.write_text(merge_report(existing, report))
        print(f"Wrote {args.results}")
    failed = [m.config for m in [*comparison, *memory] if not m.checks_passed]
    if failed:
        print(f"Delivery check failed for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
