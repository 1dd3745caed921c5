"""
The in-run dedup alone (issue 18): CPU time a chunk over many chunks, memory and disk, against the previous
``SeenKeys`` (a sorted array of 64-bit hashes re-sorted every chunk).

    python benchmarks/bench_seen_keys.py --chunks 1000 --size 10000
    python benchmarks/bench_seen_keys.py --chunks 1000 --size 10000 --previous
    python benchmarks/bench_seen_keys.py --chunks 300 --size 10000 --duplicates 0.1

Keys are ``("Purchase", "order-<16 digits>")``, all distinct unless ``--duplicates`` (that share of each chunk
repeats random keys of earlier chunks). Times are CPU seconds of ``first_occurrences`` (``time.process_time``),
so that other processes on the machine count less; the keys are built outside the timing.
"""

from __future__ import annotations

import argparse
import random
import resource
import time

import numpy as np

from airflow_provider_gravity.conversions.run.seen_keys import SeenKeys


class PreviousSeenKeys:
    """The ``SeenKeys`` this one replaced, for comparison: 8 bytes a key, re-sorted every chunk, hash-only."""

    def __init__(self) -> None:
        self._sorted = np.empty(0, dtype=np.int64)

    def first_occurrences(self, keys):
        hashes = np.fromiter((hash(key) for key in keys), dtype=np.int64, count=len(keys))
        _, first_index = np.unique(hashes, return_index=True)
        new = np.zeros(len(hashes), dtype=bool)
        new[first_index] = True
        if len(self._sorted):
            positions = np.searchsorted(self._sorted, hashes).clip(max=len(self._sorted) - 1)
            new &= self._sorted[positions] != hashes
        merged = np.concatenate([self._sorted, hashes[new]])
        self._sorted = merged
        merged.sort(kind="stable")
        return new.tolist()


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=1_000)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--duplicates", type=float, default=0.0)
    parser.add_argument("--previous", action="store_true", help="measure the previous SeenKeys instead")
    parser.add_argument("--max-filter-mib", type=float, help="SeenKeys' max_filter_bytes, in MiB (default: its own)")
    parser.add_argument("--report-every", type=int, default=0, help="chunks between two lines (default: 10 lines)")
    args = parser.parse_args()
    every = args.report_every or max(1, args.chunks // 10)

    bound = {} if args.max_filter_mib is None else {"max_filter_bytes": int(args.max_filter_mib * 2**20)}
    seen = PreviousSeenKeys() if args.previous else SeenKeys(**bound)
    rng = random.Random(0)
    times: list[float] = []
    new_keys = 0
    columns = ("chunks", "keys", "ms/chunk (last)", "max ms", "memory MiB", "disk MiB", "maxrss MB")
    print(" ".join(f"{name:>{width}}" for name, width in zip(columns, (8, 12, 16, 8, 11, 9, 10), strict=True)))
    for chunk in range(args.chunks):
        ids = [f"order-{chunk * args.size + row:016d}" for row in range(args.size)]
        if args.duplicates and chunk:
            for row in range(int(args.size * args.duplicates)):
                ids[row] = f"order-{rng.randrange(chunk * args.size):016d}"
        keys = list(zip(["Purchase"] * args.size, ids, strict=True))
        start = time.process_time()
        new_keys += sum(seen.first_occurrences(keys))
        times.append(time.process_time() - start)
        if (chunk + 1) % every == 0:
            last = np.array(times[-every:]) * 1000
            memory = getattr(seen, "memory_bytes", None) or seen._sorted.nbytes  # type: ignore[attr-defined]
            disk = getattr(seen, "disk_bytes", 0)
            print(
                f"{chunk + 1:>8,} {(chunk + 1) * args.size:>12,} {last.mean():>16.2f} {last.max():>8.1f} "
                f"{memory / 2**20:>11.1f} {disk / 2**20:>9.0f} {maxrss_mb():>10.0f}"
            )
    total = sum(times)
    print(
        f"{'previous' if args.previous else 'SeenKeys'}: {total:.1f} CPU s for {args.chunks * args.size:,} keys, "
        f"{total / (args.chunks * args.size) * 1e6:.2f} µs a key, {new_keys:,} new"
        + ("" if args.previous else f"; {seen.pages_read:,} pages and {seen.keys_read:,} keys read back")
    )


if __name__ == "__main__":
    main()
