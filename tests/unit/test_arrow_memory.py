"""The run allocates Arrow memory from the system allocator, and gives the process its pool back afterwards."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from airflow_provider_gravity.conversions.events.build import EventSettings
from airflow_provider_gravity.conversions.run.arrow_memory import POOL_VARIABLE
from airflow_provider_gravity.conversions.run.pipeline import ConversionPipeline


def _frames_recording_the_pool(seen: list[str]):
    for start in (0, 3):
        seen.append(pa.default_memory_pool().backend_name)
        yield pd.DataFrame(
            {
                "event_id": [f"o-{start + i}" for i in range(3)],
                "event_time": [1_767_225_600 + i for i in range(3)],
                "em": ["a@example.com", "b@example.com", None],
            }
        )


def _dry_run(frames) -> None:
    pipeline = ConversionPipeline(settings=EventSettings(event_name="Purchase"), sender=None)
    result = pipeline.run(frames)
    assert result.summary["rows_read"] == 6


def test_chunks_are_read_with_the_system_pool_and_the_previous_pool_comes_back(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(POOL_VARIABLE, raising=False)
    before = pa.default_memory_pool()
    seen: list[str] = []
    _dry_run(_frames_recording_the_pool(seen))
    assert seen == ["system", "system"]
    assert pa.default_memory_pool().backend_name == before.backend_name


def test_the_pool_comes_back_when_the_run_raises(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(POOL_VARIABLE, raising=False)
    before = pa.default_memory_pool().backend_name

    def broken_warehouse():
        yield from _frames_recording_the_pool([])
        raise ConnectionError("the warehouse dropped")

    with pytest.raises(ConnectionError):
        _dry_run(broken_warehouse())
    assert pa.default_memory_pool().backend_name == before


def test_a_pool_chosen_by_the_environment_is_left_alone(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(POOL_VARIABLE, "mimalloc")
    before = pa.default_memory_pool().backend_name
    seen: list[str] = []
    _dry_run(_frames_recording_the_pool(seen))
    assert seen == [before, before]


def test_the_pool_comes_back_when_the_run_is_stopped_as_the_pool_is_switched(monkeypatch: pytest.MonkeyPatch):
    """Airflow's SIGTERM handler raises wherever the task is: also right after the pool was switched."""
    from airflow_provider_gravity.conversions.run import arrow_memory

    monkeypatch.delenv(POOL_VARIABLE, raising=False)
    previous = pa.default_memory_pool()
    before = previous.backend_name
    real_set = pa.set_memory_pool
    calls: list[str] = []

    def set_then_stopped(pool: pa.MemoryPool) -> None:
        real_set(pool)
        calls.append(pool.backend_name)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the signal's exception, raised as the switch returns

    monkeypatch.setattr(arrow_memory.pa, "set_memory_pool", set_then_stopped)
    try:
        with pytest.raises(KeyboardInterrupt):
            _dry_run(_frames_recording_the_pool([]))
        assert pa.default_memory_pool().backend_name == before
    finally:
        real_set(previous)  # for the other tests, whatever happened
