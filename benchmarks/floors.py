"""The floor of each stage of the data path on this machine, as issue 18 measured it with a throwaway prototype.

Figures only (microseconds per row on 1,000,000 PostgreSQL rows, 200,000 customers; measured 2026-12-02 at a
load of 2-3.4): the report writes the provider's own figure for each stage beside them.
"""

from __future__ import annotations

from typing import NamedTuple


class StageFloor(NamedTuple):
    stage: str
    floor_us_per_row: str
    how: str


STAGE_FLOORS = (
    StageFloor("read", "1.34", "ADBC record-batch stream into Arrow"),
    StageFloor("PII", "1.23", "distinct values only, Arrow kernels, fast phone path, polars-hash SHA-256, take back"),
    StageFloor("encode", "0.86", "binary_join_element_wise over JSON fragments, bodies as buffer slices"),
    StageFloor("send", "0.48-0.77", "urllib3 / requests, one connection"),
)
#: The prototype end to end in one process (PostgreSQL -> sink), and its ratio to the naive loop of its session.
PROTOTYPE_ROWS_PER_SECOND = 209_000
PROTOTYPE_SPEEDUP = 10.3
