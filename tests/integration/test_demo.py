"""``make demo`` end to end, twice: the first run's last night delivers its seeded day to the sandbox and, with
the DAG's default lookback of 2 days, re-reads the two days before it, which earlier nights delivered; the
second run re-reads the same rows and delivers none of them again (the delivery log)."""

from __future__ import annotations

import subprocess
import sys
import time

from demo.run_demo import run_summaries
from tests.support.airflow_fixtures import REPO_ROOT


def run_demo(home, *extra: str) -> tuple[str, float]:
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "demo" / "run_demo.py"), "--home", str(home), *extra],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout, time.monotonic() - started


def test_demo_delivers_one_day_then_nothing_twice(tmp_path):
    home = tmp_path / "airflow-demo"
    first_output, first_seconds = run_demo(home, "--fresh")
    _, first = run_summaries(home)
    second_output, _ = run_demo(home)
    _, second = run_summaries(home)

    assert set(first) == {"send_crm_conversions", "send_store_purchases"}
    for task_id, summary in first.items():
        assert summary["rows_read"] > 1000, task_id
        sent = summary["delivered"] + summary["skipped_delivered"]
        assert sent > 0.95 * summary["rows_read"], task_id
        # Three days read: its own delivered now, the two before skipped, delivered by the nights before.
        assert 0.25 * summary["rows_read"] < summary["delivered"] < 0.5 * summary["rows_read"], task_id
        assert summary["skipped_delivered"] > summary["delivered"], task_id
        assert second[task_id]["rows_read"] == summary["rows_read"]
        assert second[task_id]["skipped_delivered"] == sent
        assert second[task_id]["delivered"] == 0
    assert first_seconds < 120
    for output in (first_output, second_output):
        assert "LOCAL SANDBOX" in output and "https://api.trygravity.ai" in output
        assert "plaintext PII seen" in output
    assert "the sandbox received 0 events this time" in second_output
