"""
Soak test: one seeded, reproducible storm of faults, killed tries and re-runs over a real PostgreSQL table.

A task run is a series of tries of ``tests/support/soak_task.py``, each a subprocess sharing the run's task state
store (a JSON file) and the delivery log (a PostgreSQL table). Before each try the sandbox gets a random
fault schedule (5xx and 429 answers, dropped connections, slow answers past the client's timeout), and
most tries are SIGKILLed: after a random request reached the sandbox, at a random time, or inside a
random delivery log write before it commits. The next try is Airflow's retry; a run ends with a
successful try. Then the same window is re-run with a fresh run id and an empty store, once at once and
once after the sandbox clock moved 49 hours (Gravity's dedup forgot everything; only the delivery log
stands between a re-run and double counting), with late rows added to the table in between.

What is checked does not depend on timing: each conversion accepted by Gravity exactly once over all
runs; the delivery log complete and holding nothing else; each summary putting every row it read in one
bucket, a successful one every row of the table, resumed or not; a retry sending again at most what was
in flight when the previous try ended; no plaintext PII. A failing check names the seed, the run and the
try; ``GRAVITY_SOAK_SEED=<seed>`` replays the same schedule (timing may still vary).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.databases import POSTGRES_URL
from tests.support.sandbox_server import REPO_ROOT, SandboxServer

pytestmark = pytest.mark.timeout(300)

SEED = int(os.environ.get("GRAVITY_SOAK_SEED", "20261126"))
EVENT_NAME = "Purchase"
ROWS = 25_000
LATE_ROWS = 2_500
#: Share of rows with a defect that makes them ``invalid`` (plus in-run duplicates, below).
DEFECT_SHARE = 0.012
DUPLICATE_SHARE = 0.004
DEFECTS = ("bad_currency", "bad_value", "missing_event_time", "event_time_in_future", "missing_event_id")
#: Tries with faults (and maybe a kill) before a clean try, per run; then a few clean tries at most.
FAULTY_TRIES = {"first": 8, "rerun_now": 3, "rerun_49h": 5}
CLEAN_TRIES = 3
KILL_SHARE = 0.8
#: Seconds a try may take before it counts as hung and is killed.
TRY_TIMEOUT = 90.0
#: After this many seconds of soak, the remaining tries run without faults or kills (the schedule is still
#: drawn, so the seed's sequence does not change): the test stays well within 3 minutes on a slow machine.
SOFT_DEADLINE = 120.0
#: Read timeout of one request in the task. A ``slow`` fault is either well within it or past it (the
#: sandbox then processes a batch whose answer nobody reads, and the client sends it again).
REQUEST_TIMEOUT = 2.5
SHORT_SLOW = (0.2, 1.0)
LONG_SLOW = (2.7, 3.2)
POLL_SECONDS = 0.04
#: A run is over when the sandbox answered nothing for this long (longer than the slowest fault).
SETTLE_SECONDS = LONG_SLOW[1] + 1.0
BUCKETS = ("delivered", "duplicate", "rejected", "invalid", "skipped_delivered", "undelivered")
SQL = """
SELECT order_id AS event_id, created_at AS event_time, email AS em, phone AS ph, first_name AS fn,
       last_name AS ln, customer_id AS external_id, country, total AS value, currency,
       CAST(order_id AS TEXT) AS order_id
FROM {table} ORDER BY event_id"""
FIRST_NAMES = ["  Mary-Jane ", "Valéry", "JOSÉ", "Anne", "O'Neil", "李", "Zoe\u0308", ""]
LAST_NAMES = ["O'Brien", "Smith", "Müller", "García-López", " dupont ", "Nguyễn", None]
PHONES = {
    "US": "+1 650 555 {n:04d}",
    "GB": "020 7946 {n:04d}",
    "FR": "06 12 34 {a:02d} {b:02d}",
    "DE": "0151 2345{n:04d}",
}


@dataclass
class Orders:
    """
    Rows of the orders table and what must become of them.

    :param rows: the rows, in insertion (not event id) order.
    :param valid: event ids that must reach Gravity, once each.
    :param invalid: event id of each invalid row that has one, and its reason (the dead letter).
    :param reasons: count of invalid rows by reason, as the summary must show them.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    invalid: dict[str, str] = field(default_factory=dict)
    reasons: Counter = field(default_factory=Counter)

    def extend(self, other: Orders) -> None:
        self.rows += other.rows
        self.valid |= other.valid
        self.invalid.update(other.invalid)
        self.reasons.update(other.reasons)


def generate_orders(rng: random.Random, order_ids: list[int], now: dt.datetime) -> Orders:
    """Orders of repeat customers over the last day, with PII, some defects and some exact duplicates."""
    orders = Orders()
    for order_id in order_ids:
        customer = rng.randrange(5_000)
        region = rng.choice(list(PHONES))
        n = rng.randrange(10_000)
        phone = PHONES[region].format(n=n, a=n % 100, b=n // 100)
        email = rng.choice(["customer{c}@example.com", "  Customer{c}@Example.COM ", "customer{c}.example.com"])
        row = {
            "order_id": order_id,
            "created_at": now - dt.timedelta(seconds=rng.randrange(600, 80_000)),
            "customer_id": 10_000 + customer,
            "email": None if rng.random() < 0.05 else email.format(c=customer),
            "phone": "12345" if rng.random() < 0.03 else phone,
            "country": None if rng.random() < 0.2 else region,
            "first_name": rng.choice(FIRST_NAMES),
            "last_name": rng.choice(LAST_NAMES),
            "total": Decimal(rng.randrange(100, 50_000)) / 100,
            "currency": rng.choice(["usd", "EUR", " gbp "]),
        }
        defect = rng.choice(DEFECTS) if rng.random() < DEFECT_SHARE else None
        if defect == "bad_currency":
            row["currency"] = "dollars"
        elif defect == "bad_value":
            row["total"] = Decimal("-12.50")
        elif defect == "missing_event_time":
            row["created_at"] = None
        elif defect == "event_time_in_future":
            row["created_at"] = now + dt.timedelta(days=30)
        elif defect == "missing_event_id":
            row["order_id"] = None
        orders.rows.append(row)
        if defect is None:
            orders.valid.add(str(order_id))
        else:
            orders.reasons[defect] += 1
            if defect != "missing_event_id":
                orders.invalid[str(order_id)] = defect
        if defect is None and rng.random() < DUPLICATE_SHARE:
            orders.rows.append(dict(row))
            orders.reasons["duplicate_in_run"] += 1
    rng.shuffle(orders.rows)
    return orders


def load_orders(engine: sa.Engine, table: sa.Table, orders: Orders) -> None:
    """Create the table if needed and insert the rows."""
    with engine.begin() as connection:
        table.create(connection, checkfirst=True)
        connection.execute(sa.insert(table), orders.rows)


def orders_table(schema: str) -> sa.Table:
    """The warehouse's orders table, with PII columns and nullable ids and times."""
    return sa.Table(
        "orders",
        sa.MetaData(),
        sa.Column("order_id", sa.BigInteger),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("customer_id", sa.BigInteger),
        sa.Column("email", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("country", sa.Text),
        sa.Column("first_name", sa.Text),
        sa.Column("last_name", sa.Text),
        sa.Column("total", sa.Numeric(12, 2)),
        sa.Column("currency", sa.Text),
        schema=schema,
    )


@dataclass
class TaskConfig:
    """The operator arguments of one task run: the same for every try of the run."""

    chunk_size: int
    batch_size: int
    max_concurrency: int
    max_retries: int

    @classmethod
    def draw(cls, rng: random.Random) -> TaskConfig:
        return cls(
            chunk_size=rng.choice([2_000, 3_000, 5_000]),
            batch_size=rng.choice([200, 250, 500]),
            max_concurrency=rng.choice([2, 3, 4]),
            max_retries=rng.choice([2, 3]),
        )


@dataclass
class KillPlan:
    """
    How a try is SIGKILLed: by the test after ``after_requests`` requests reached the sandbox (plus ``jitter``
    seconds) or ``after_seconds`` after it started, or by the try itself inside its ``in_log_write``-th write
    to the delivery log, before that write commits.
    """

    after_requests: int | None = None
    after_seconds: float | None = None
    in_log_write: int | None = None
    jitter: float = 0.0

    @property
    def kind(self) -> str:
        if self.after_requests is not None:
            return "after a request"
        return "inside a log write" if self.in_log_write is not None else "at a time"

    def describe(self) -> str:
        if self.after_requests is not None:
            return f"kill after request {self.after_requests} + {self.jitter:.2f}s"
        if self.in_log_write is not None:
            return f"kill inside delivery log write {self.in_log_write}"
        return f"kill at {self.after_seconds:.2f}s"


@dataclass
class TryRecord:
    """One try: what it was given, how it ended, and the result it wrote (when it got that far)."""

    run: str
    number: int
    faults: list[dict]
    kill: KillPlan | None
    exit_code: int | None = None
    killed: bool = False
    seconds: float = 0.0
    result: dict | None = None

    def describe(self) -> str:
        faults = ", ".join(_fault_text(f) for f in self.faults) or "no faults"
        outcome = "KILLED" if self.killed else {0: "ok", 1: "failed", 2: "CRASHED"}.get(self.exit_code, "?")
        if self.result and self.result.get("summary"):
            summary = self.result["summary"]
            counts = " ".join(f"{b}={summary[b]}" for b in BUCKETS if summary[b])
            outcome += f" [{counts}; resumed_chunks={summary.get('resumed_chunks', 0)}]"
        plan = f"; {self.kill.describe()}" if self.kill else ""
        return f"{self.run} try {self.number}: {faults}{plan} -> {outcome} in {self.seconds:.1f}s"


def _fault_text(spec: dict) -> str:
    detail = {k: v for k, v in spec.items() if k != "kind"}
    return f"{spec['kind']}{detail}"


def draw_faults(rng: random.Random, expected_requests: int) -> list[dict]:
    """1 to 3 faults, in order: short 5xx/429 bursts the retries absorb, outages, drops and slow answers."""
    specs: list[dict] = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choices(["burst", "outage", "drop", "slow"], weights=[3, 2, 2, 2])[0]
        after = int(rng.random() * expected_requests / 2)
        if kind in ("burst", "outage"):
            status = rng.choice([500, 503, 429])
            count = rng.randint(1, 5) if kind == "burst" else rng.choice([rng.randint(10, 40), 100_000])
            spec = {"kind": "status", "status": status, "count": count, "after": after}
            retry_after = rng.choice([None, "0", "1"]) if status == 429 else None
            if retry_after is not None:
                spec["retry_after"] = retry_after
        elif kind == "drop":
            spec = {"kind": "drop", "process": rng.random() < 0.5, "count": rng.randint(1, 3), "after": after}
        else:
            seconds = rng.uniform(*rng.choice([SHORT_SLOW, LONG_SLOW]))
            spec = {"kind": "slow", "seconds": round(seconds, 2), "count": rng.randint(1, 3)}
            spec["after"] = after
        specs.append(spec)
    return specs


class Soak:
    """Runs tries and runs against one sandbox and one PostgreSQL schema, and collects what went wrong."""

    def __init__(self, sandbox: SandboxServer, engine: sa.Engine, schema: str, workdir: Path) -> None:
        self.sandbox = sandbox
        self.engine = engine
        self.schema = schema
        self.workdir = workdir
        self.rng = random.Random(SEED)
        self.sql = SQL.format(table=f"{schema}.orders")
        self.log_table = f"{schema}.gravity_delivery_log"
        self.orders = Orders()
        self.started = time.monotonic()
        self.tries: list[TryRecord] = []
        self.violations: list[str] = []

    def fail(self, record: TryRecord | None, message: str) -> None:
        where = f"{record.run} try {record.number}" if record else "end"
        self.violations.append(f"seed={SEED} {where}: {message}")

    # -- running --------------------------------------------------------------------------------------

    def run_task(self, run: str, run_id: str) -> dict:
        """
        Tries of one task run, sharing one state store, until one succeeds; return its summary. Checks each
        summary written, and that the retries sent again no more than what was in flight when a try ended.
        """
        config = TaskConfig.draw(self.rng)
        store = self.workdir / f"{run}-state.json"
        fingerprint = hashlib.sha256(
            json.dumps([self.sql, config.chunk_size, config.batch_size, EVENT_NAME]).encode()
        ).hexdigest()[:32]
        print(f"{run}: run_id={run_id} {config}")
        duplicates_before = self.sandbox.stats()["by_status"]["duplicate"]
        records: list[TryRecord] = []
        summary: dict = {}
        for number in range(1, FAULTY_TRIES[run] + CLEAN_TRIES + 1):
            faulty = number <= FAULTY_TRIES[run]
            expected = self._expected_requests(config)
            faults = draw_faults(self.rng, expected) if faulty else []
            kill = self._draw_kill(expected, math.ceil(len(self.orders.rows) / config.chunk_size)) if faulty else None
            late = time.monotonic() - self.started > SOFT_DEADLINE
            record = TryRecord(run, number, [] if late else faults, None if late else kill)
            self._run_try(record, config, store, fingerprint, run_id)
            records.append(record)
            print("  " + record.describe() + (" (past the soft deadline: no faults, no kill)" if late else ""))
            self.check_summary(record)
            if record.exit_code == 0 and not record.killed:
                summary = record.result["summary"]
                break
            if not record.faults and not record.kill:
                self.fail(record, f"a try without faults or kill did not succeed ({record.describe()})")
        else:
            self.fail(None, f"{run}: no try succeeded")
        self.tries += records
        self.settle(run)
        self.check_resent(run, config, records, self.sandbox.stats()["by_status"]["duplicate"] - duplicates_before)
        return summary

    def settle(self, run: str) -> None:
        """
        Wait until the sandbox finished the requests it is still processing: a slow answer the client gave up
        on (or a killed try left behind) is still processed, and must count for this run, not the next; and
        no request may reach Gravity across the 49-hour jump, which nothing real would do. A request whose
        client vanished while sending the body is counted but never answered, so "finished" means: every
        request answered, or none answered for longer than the slowest fault.
        """
        idle_since, last_pending = time.monotonic(), None
        while True:
            stats = self.sandbox.stats()
            pending = stats["requests"] - sum(stats["http_statuses"].values())
            if pending != last_pending:
                idle_since, last_pending = time.monotonic(), pending
            if pending <= 0 or time.monotonic() - idle_since > SETTLE_SECONDS:
                return
            time.sleep(0.1)

    def _expected_requests(self, config: TaskConfig) -> int:
        left = max(0, len(self.orders.valid) - self.sandbox.stats()["unique_events"])
        return math.ceil(left / config.batch_size) + 1

    def _draw_kill(self, expected_requests: int, chunks: int) -> KillPlan | None:
        """No kill, or a kill after a random request still to send, in a random delivery log write, or at a time."""
        # As many draws whatever the outcome, so that timing does not shift the rest of the seed's sequence.
        kill, how, where, seconds = (self.rng.random() for _ in range(4))
        jitter = round(self.rng.uniform(0, 0.25), 3)
        if kill >= KILL_SHARE:
            return None
        if how < 0.5 and expected_requests > 1:
            return KillPlan(after_requests=1 + int(where * expected_requests), jitter=jitter)
        if how < 0.85:
            # One write per answered batch, and one per chunk holding invalid rows (the dead letters).
            return KillPlan(in_log_write=1 + int(where * (expected_requests + chunks)))
        return KillPlan(after_seconds=round(3.0 + 3.5 * seconds, 2))

    def _run_try(self, record: TryRecord, config: TaskConfig, store: Path, fingerprint: str, run_id: str) -> None:
        self.sandbox.faults(*record.faults)
        out = self.workdir / f"{record.run}-try{record.number}.json"
        log_path = self.workdir / f"{record.run}-try{record.number}.log"
        command = [
            sys.executable,
            "-m",
            "tests.support.soak_task",
            *("--db-url", POSTGRES_URL, "--sql", self.sql, "--log-table", self.log_table),
            *("--sandbox-url", self.sandbox.url, "--store", str(store), "--fingerprint", fingerprint),
            *("--run-id", run_id, "--out", str(out), "--event-name", EVENT_NAME),
            *("--chunk-size", str(config.chunk_size), "--batch-size", str(config.batch_size)),
            *("--max-concurrency", str(config.max_concurrency), "--max-retries", str(config.max_retries)),
            *("--timeout", str(REQUEST_TIMEOUT)),
        ]
        if record.kill and record.kill.in_log_write:
            command += ["--kill-in-log-write", str(record.kill.in_log_write)]
        env = {**os.environ, "GRAVITY_SOAK_API_KEY": self.sandbox.api_key, "PYTHONUNBUFFERED": "1"}
        requests_before = self.sandbox.stats()["requests"]
        started = time.monotonic()
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
            record.killed = self._supervise(process, record, requests_before, started)
        record.killed = record.killed or process.returncode == -signal.SIGKILL
        record.seconds = time.monotonic() - started
        record.exit_code = process.returncode
        if store.exists():  # what the next try resumes from, kept for a post-mortem
            shutil.copyfile(store, self.workdir / f"{record.run}-try{record.number}-state.json")
        if out.exists():
            record.result = json.loads(out.read_text())
        elif not record.killed:
            self.fail(record, f"exit code {process.returncode} and no result; log:\n{_tail(log_path)}")
        if record.result and record.result.get("crash"):
            self.fail(record, f"the task raised:\n{record.result['crash']}")
        failure = (record.result or {}).get("failure")
        if failure and not failure["retryable"]:
            self.fail(record, f"only transient faults, yet a failure that Airflow would not retry: {failure}")

    def _supervise(self, process: subprocess.Popen, record: TryRecord, requests_before: int, started: float) -> bool:
        """Wait for the try to end, killing it as planned (or when hung); return whether it was killed."""
        plan = record.kill
        while True:
            try:
                process.wait(timeout=POLL_SECONDS)
                return False
            except subprocess.TimeoutExpired:
                pass
            elapsed = time.monotonic() - started
            if elapsed > TRY_TIMEOUT:
                self.fail(record, f"still running after {TRY_TIMEOUT:g}s: killed as hung")
                return _kill(process)
            if plan is None or plan.in_log_write is not None:
                continue
            if plan.after_seconds is not None:
                due = elapsed >= plan.after_seconds
            else:
                due = self.sandbox.stats()["requests"] - requests_before >= plan.after_requests
            if due:
                time.sleep(plan.jitter)
                if process.poll() is not None:
                    return False
                return _kill(process)

    # -- checking -------------------------------------------------------------------------------------

    def check_summary(self, record: TryRecord) -> None:
        """
        A summary puts each row read in exactly one bucket; a successful try's rows are the table's (also when
        it resumed), a failed try's at most the table's (it stops reading at the failure).
        """
        if not record.result or not record.result.get("summary"):
            return
        summary = record.result["summary"]
        buckets = {name: summary[name] for name in BUCKETS}
        table_rows = len(self.orders.rows)
        failed = bool(record.result.get("failure"))
        if summary["rows_read"] != sum(buckets.values()):
            self.fail(record, f"rows_read {summary['rows_read']} != sum of the buckets {buckets}")
        if summary["rows_read"] != table_rows:  # a failed try reads on and counts what it no longer sends
            self.fail(
                record,
                f"summary of a {'failed' if failed else 'successful'} try has rows_read {summary['rows_read']}, "
                f"the table holds {table_rows} rows ({buckets}, resumed_chunks={summary.get('resumed_chunks', 0)})",
            )
        if summary.get("changed_since_delivery"):
            self.fail(record, f"{summary['changed_since_delivery']} events changed since delivery; no row changed")
        if failed and not summary["undelivered"]:
            self.fail(record, f"a failed try with nothing undelivered: {buckets}, {record.result['failure']}")

    def check_resent(self, run: str, config: TaskConfig, records: list[TryRecord], duplicates: int) -> None:
        """
        Events Gravity answered ``duplicate`` during a run: at most the batches in flight when a try ended (the
        pipeline holds at most ``2 * max_concurrency``) and one batch per fault that has the sandbox process a
        batch whose answer the client never reads (a dropped-after-processing connection, a slow answer past
        the timeout). Everything acknowledged before is skipped by the resume state or the delivery log.
        """
        ended = sum(1 for r in records if r.killed or r.exit_code != 0)
        processed_unread = sum(
            spec["count"]
            for r in records
            for spec in r.faults
            if (spec["kind"] == "drop" and spec["process"])
            or (spec["kind"] == "slow" and spec["seconds"] > REQUEST_TIMEOUT)
        )
        bound = (ended * 2 * config.max_concurrency + processed_unread) * config.batch_size
        print(f"  {run}: {duplicates} events sent again (answered duplicate), at most {bound} allowed")
        if duplicates > bound:
            self.fail(
                None,
                f"{run}: {duplicates} events sent again, more than the {bound} that can have been in flight "
                f"({ended} ended tries x 2 x {config.max_concurrency} batches + {processed_unread} processed-unread "
                f"batches, of {config.batch_size} events)",
            )

    def check_success(self, run: str, summary: dict) -> None:
        """The summary of a successful try: nothing left undelivered, every row where it belongs."""
        if not summary:
            return
        record = next(r for r in reversed(self.tries) if r.run == run)
        held = summary["delivered"] + summary["duplicate"] + summary["skipped_delivered"]
        expected = {
            "held by Gravity (delivered + duplicate + skipped_delivered)": (held, len(self.orders.valid)),
            "invalid": (summary["invalid"], sum(self.orders.reasons.values())),
            "rejected": (summary["rejected"], 0),
            "undelivered": (summary["undelivered"], 0),
            "invalid_reasons": (summary["invalid_reasons"], dict(self.orders.reasons)),
        }
        for label, (seen, wanted) in expected.items():
            if seen != wanted:
                self.fail(record, f"successful summary: {label} is {seen}, expected {wanted}")

    def check_gravity(self) -> dict:
        """Gravity accepted each valid event exactly once over all runs, and never saw plaintext PII."""
        stats = self.sandbox.stats()
        accepted = Counter((e["event_name"], e["event_id"]) for e in self.sandbox.events())
        twice = {key: n for key, n in accepted.items() if n > 1}
        if twice or stats["redelivered"] or stats["max_deliveries_of_one_event"] > 1:
            sample = dict(list(twice.items())[:10])
            self.fail(
                None,
                f"Gravity accepted events more than once: redelivered={stats['redelivered']}, "
                f"max_deliveries_of_one_event={stats['max_deliveries_of_one_event']}, e.g. {sample}",
            )
        expected = {(EVENT_NAME, event_id) for event_id in self.orders.valid}
        missing, extra = expected - set(accepted), set(accepted) - expected
        if missing or extra:
            self.fail(None, f"accepted events differ: {len(missing)} never accepted, {len(extra)} unexpected")
        if stats["plaintext_pii_seen"]:
            self.fail(None, f"the sandbox received plaintext PII {stats['plaintext_pii_seen']} times")
        if stats["by_status"]["error"]:
            self.fail(None, f"the sandbox rejected {stats['by_status']['error']} events")
        return stats

    def check_delivery_log(self, after: str) -> None:
        """
        The log holds every valid event as delivered (with the hash of the payload Gravity accepted) or
        duplicate, every invalid one as invalid with its reason, and nothing else: after each successful run.
        """
        query = f"SELECT event_name, event_id, status, detail, payload_sha256 FROM {self.log_table}"
        with self.engine.connect() as connection:
            logged = {(name, event_id): rest for name, event_id, *rest in connection.execute(sa.text(query))}
        problems: list[str] = []
        for event_id in sorted(self.orders.valid):
            status, _, payload_sha256 = logged.pop((EVENT_NAME, event_id), (None, None, None))
            if status not in ("delivered", "duplicate"):
                problems.append(f"{event_id}: {status}, expected delivered or duplicate")
            elif status == "delivered" and payload_sha256 is None:
                problems.append(f"{event_id}: delivered without the hash of the payload Gravity accepted")
        for event_id, reason in sorted(self.orders.invalid.items()):
            status, detail, _ = logged.pop((EVENT_NAME, event_id), (None, None, None))
            if (status, detail) != ("invalid", reason):
                problems.append(f"{event_id}: {status} {detail!r}, expected invalid {reason!r}")
        problems += [f"{key}: {entry}, not a row of the table" for key, entry in sorted(logged.items())]
        if problems:
            self.fail(None, f"delivery log after {after}: {len(problems)} wrong entries, e.g. {problems[:10]}")


def _kill(process: subprocess.Popen) -> bool:
    try:
        os.kill(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    return process.returncode == -signal.SIGKILL


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def test_soak_kills_faults_and_reruns_never_double_count(postgres, sandbox, tmp_path):
    engine, schema = postgres
    soak = Soak(sandbox, engine, schema, tmp_path)
    print(f"\nsoak seed {SEED} (replay: GRAVITY_SOAK_SEED={SEED})")
    data_rng = random.Random(f"{SEED}-orders")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    table = orders_table(schema)
    first = generate_orders(data_rng, [2_000_000 + 2 * k for k in range(ROWS)], now)
    load_orders(engine, table, first)
    soak.orders.extend(first)

    summary = soak.run_task("first", "scheduled__soak-day-1")
    soak.check_success("first", summary)
    soak.check_delivery_log("first")

    received_before = sandbox.stats()["events_received"]
    summary = soak.run_task("rerun_now", "manual__soak-rerun-now")
    soak.check_success("rerun_now", summary)
    soak.check_delivery_log("rerun_now")
    if summary and (summary["skipped_delivered"], summary["delivered"]) != (len(soak.orders.valid), 0):
        soak.fail(
            None,
            f"re-run at once: skipped_delivered/delivered {summary['skipped_delivered']}/"
            f"{summary['delivered']}, expected {len(soak.orders.valid)}/0",
        )
    if sandbox.stats()["events_received"] != received_before:
        soak.fail(None, "re-run at once sent events the delivery log holds as delivered")

    sandbox.advance_clock(hours=49)
    delivered_before = set(soak.orders.valid)
    late_ids = sorted(2_000_001 + 2 * k for k in data_rng.sample(range(ROWS), LATE_ROWS))
    late = generate_orders(data_rng, late_ids, now)
    load_orders(engine, table, late)
    soak.orders.extend(late)
    summary = soak.run_task("rerun_49h", "manual__soak-rerun-49h")
    soak.check_success("rerun_49h", summary)
    if summary and summary["skipped_delivered"] < len(delivered_before):
        soak.fail(
            None,
            f"re-run after 49 h skipped {summary['skipped_delivered']} delivered events, "
            f"expected at least {len(delivered_before)}",
        )

    stats = soak.check_gravity()
    soak.check_delivery_log("rerun_49h")
    kills = Counter(r.kill.kind if r.kill else "as hung" for r in soak.tries if r.killed)
    failed = sum(1 for r in soak.tries if not r.killed and r.exit_code == 1)
    resent = stats["events_received"] - stats["unique_events"] - stats["by_status"]["error"]
    print(
        f"soak seed {SEED}: {len(soak.tries)} tries, {kills.total()} killed ({dict(kills)}), {failed} failed, "
        f"{stats['requests']} requests ({stats['faults_served']} faults served), "
        f"{stats['unique_events']} events accepted once, {resent} events re-sent "
        f"({stats['by_status']['duplicate']} answered duplicate), {len(soak.orders.rows)} rows, "
        f"{time.monotonic() - soak.started:.0f}s"
    )
    assert not soak.violations, f"{len(soak.violations)} soak invariant(s) broken:\n" + "\n".join(soak.violations)
