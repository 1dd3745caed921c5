"""Event keys seen so far in a run, in 8 bytes per key, so that in-run dedup stays small at any size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class SeenKeys:
    """
    A sorted array of 64-bit key hashes. Memory grows by 8 bytes per distinct key (24 MB for 3 million),
    not by the key strings themselves.
    """

    def __init__(self) -> None:
        self._sorted = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._sorted)

    def first_occurrences(self, keys: Sequence[tuple[Any, ...]]) -> list[bool]:
        """
        For each key, whether it is seen here for the first time in the run (and remember it).
        Within ``keys`` only the first of equal keys is new.
        """
        if not keys:
            return []
        hashes = np.fromiter((hash(key) for key in keys), dtype=np.int64, count=len(keys))
        _, first_index = np.unique(hashes, return_index=True)
        new = np.zeros(len(hashes), dtype=bool)
        new[first_index] = True
        if len(self._sorted):
            positions = np.searchsorted(self._sorted, hashes).clip(max=len(self._sorted) - 1)
            new &= self._sorted[positions] != hashes
        merged = np.concatenate([self._sorted, hashes[new]])
        self._sorted = merged  # drop the old array before sorting: at most two copies alive, not three
        merged.sort(kind="stable")  # in place; two sorted runs merge in linear time
        return new.tolist()
