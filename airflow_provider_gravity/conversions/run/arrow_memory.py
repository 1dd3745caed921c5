"""
Where Arrow allocates during a run, so that the task's memory follows the chunk, not the rows read before it.

pyarrow's default pool (mimalloc in its Linux wheels) keeps the pages of freed chunks for later chunks: over a
1,000,000-row run that was about 40 MB of the task's peak that no chunk ever used at once. The system allocator
gives them back. The pool is the whole process's, which in Airflow is the one task instance's: it is set for
the run and put back after it, and left alone when the worker's environment chose one
(``ARROW_DEFAULT_MEMORY_POOL``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

#: The environment variable with which pyarrow lets a deployment choose its pool.
POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


@contextmanager
def run_memory_pool() -> Iterator[pa.MemoryPool]:
    """
    Allocate Arrow memory from the system allocator while the block runs, unless the environment chose a pool.

    :return: the pool in use; the pipeline calls its ``release_unused`` every
        :data:`~airflow_provider_gravity.conversions.run.pipeline.RELEASE_MEMORY_EVERY_ROWS` rows read.
    """
    if os.environ.get(POOL_VARIABLE):
        yield pa.default_memory_pool()
        return
    previous = pa.default_memory_pool()
    pool = pa.system_memory_pool()
    try:  # the switch inside: an exception raised as it returns (Airflow's SIGTERM handler) still restores
        pa.set_memory_pool(pool)
        yield pool
    finally:
        pa.set_memory_pool(previous)
