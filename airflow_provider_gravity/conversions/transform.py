"""
Turn chunks of rows into events, in this process or in worker processes.

Building events (validation, PII normalization and hashing) is CPU-bound Python. With
``processes > 0`` it runs in that many spawned worker processes, each with its own PII cache, while
this process keeps reading rows and sending; chunks still come out in their order, so that in-run dedup
and resume see the same sequence either way.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

import pandas as pd

from airflow_provider_gravity.conversions.columns import normalize_column_names
from airflow_provider_gravity.conversions.events import BuiltChunk, EventSettings, build_events
from airflow_provider_gravity.conversions.pii import PiiCache

_worker_cache: PiiCache | None = None


def built_chunks(
    chunks: Iterable[pd.DataFrame],
    settings: EventSettings,
    now: float,
    *,
    processes: int = 0,
    cache_entries: int = 250_000,
) -> Iterator[BuiltChunk]:
    """
    Build the events of each chunk, in order.

    :param chunks: DataFrames of rows; their columns are checked against the column contract first.
    :param settings: how rows become events.
    :param now: the run's reference time.
    :param processes: worker processes; 0 builds in this process.
    :param cache_entries: distinct values remembered per PII field (per process).
    """
    if processes <= 0:
        cache = PiiCache(max_entries=cache_entries)
        for frame in chunks:
            frame.columns = normalize_column_names(frame.columns)
            yield build_events(frame, settings, now, cache)
        return
    # spawn, not fork: the Airflow task process runs threads, and forking a threaded process can deadlock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=_start_worker, initargs=(cache_entries,)
    ) as pool:
        pending: deque[Future] = deque()
        try:
            for frame in chunks:
                frame.columns = normalize_column_names(frame.columns)
                pending.append(pool.submit(_build_in_worker, frame, settings, now))
                if len(pending) > processes:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _start_worker(cache_entries: int) -> None:
    global _worker_cache
    _worker_cache = PiiCache(max_entries=cache_entries)


def _build_in_worker(frame: pd.DataFrame, settings: EventSettings, now: float) -> BuiltChunk:
    return build_events(frame, settings, now, _worker_cache)
