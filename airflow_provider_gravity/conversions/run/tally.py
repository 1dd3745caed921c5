"""The run summary: every source row in exactly one bucket, plus reasons, field drops and coverage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from airflow_provider_gravity.conversions.buckets import DEAD_LETTER_BUCKETS, Bucket
from airflow_provider_gravity.conversions.match_keys import MATCH_KEY_BITS, MATCH_KEYS
from airflow_provider_gravity.conversions.run.summary import RunSummary, bucket_counts

BUCKETS = tuple(Bucket)
#: Gravity's messages counted one by one; the rest are summed under :data:`OTHER_MESSAGES`, so a run with
#: thousands of distinct messages keeps a small summary and resume state.
TOP_MESSAGES = 20
OTHER_MESSAGES = "(other messages)"
_MESSAGE_PREFIX = "rejected."


class Tally(Counter[str]):
    """
    Flat counters of a run or of a part of it, JSON-ready so that progress can be saved and restored.

    Keys: ``bucket.<name>``, ``invalid.<reason>``, ``rejected.<message>``, ``drop.<field reason>``,
    ``coverage.<match key>``, ``sent`` (events sent), ``attributed``, ``changed_since_delivery``.
    """

    def messages(self) -> Tally:
        """Return the ``rejected.<message>`` counters alone."""
        return Tally({key: count for key, count in self.items() if key.startswith(_MESSAGE_PREFIX)})

    def without_messages(self) -> Tally:
        """Every counter but ``rejected.<message>``."""
        return Tally({key: count for key, count in self.items() if not key.startswith(_MESSAGE_PREFIX)})

    def compact_messages(self, keep: int = TOP_MESSAGES) -> None:
        """Keep the ``keep`` most frequent messages and sum the others under :data:`OTHER_MESSAGES`."""
        other = _MESSAGE_PREFIX + OTHER_MESSAGES
        ranked = sorted(
            ((count, key) for key, count in self.items() if key.startswith(_MESSAGE_PREFIX) and key != other),
            key=lambda pair: (-pair[0], pair[1]),
        )
        for count, key in ranked[keep:]:
            self[other] += count
            del self[key]

    def count_row(self, bucket: str, detail: str | None = None, rows: int = 1) -> None:
        """Put ``rows`` rows in ``bucket``, with their reason for ``invalid`` or Gravity's message for ``rejected``."""
        self[f"bucket.{bucket}"] += rows
        if bucket in DEAD_LETTER_BUCKETS and detail:
            self[f"{bucket}.{detail}"] += rows

    def count_outcomes(self, outcomes: Iterable[tuple[str, str | None]]) -> None:
        """Count rows given as ``(bucket, detail)`` pairs, each distinct pair once."""
        for (bucket, detail), rows in Counter(outcomes).items():
            self.count_row(bucket, detail, rows)

    def count_sent(self, coverages: Sequence[int] | np.ndarray) -> None:
        """
        Count events that were sent, and the match keys they carried.

        :param coverages: each sent event's match keys, bit ``i`` for ``MATCH_KEYS[i]``.
        """
        self["sent"] += len(coverages)
        if isinstance(coverages, np.ndarray):
            bits = coverages.astype(np.int64, copy=False)
        else:
            bits = np.fromiter(coverages, dtype=np.int64, count=len(coverages))
        for key, bit in MATCH_KEY_BITS.items():
            count = int(np.count_nonzero(bits & bit))
            if count:
                self[f"coverage.{key}"] += count

    def to_json(self) -> dict[str, int]:
        """Return the non-zero counters as a plain dict."""
        return {key: int(value) for key, value in self.items() if value}


def build_summary(tally: Tally, *, requests: int, retries: int, seconds: float, dry_run: bool) -> RunSummary:
    """
    Build the summary a user reads: buckets, reasons, drops, coverage and speed.

    Small enough for XCom and free of PII.
    """
    buckets = {name: int(tally[f"bucket.{name}"]) for name in BUCKETS}
    rows_read = sum(buckets.values())
    sent = int(tally["sent"])
    errors = buckets[Bucket.REJECTED] + buckets[Bucket.INVALID]
    messages = tally.messages()
    messages.compact_messages()
    rejected = sorted(_sub_counts(messages, "rejected").items(), key=lambda kv: (-kv[1], kv[0]))
    # Each bucket by its literal key, in Bucket order, so that the type checker holds the summary to RunSummary.
    return {
        "rows_read": rows_read,
        "delivered": buckets[Bucket.DELIVERED],
        "duplicate": buckets[Bucket.DUPLICATE],
        "rejected": buckets[Bucket.REJECTED],
        "invalid": buckets[Bucket.INVALID],
        "skipped_delivered": buckets[Bucket.SKIPPED_DELIVERED],
        "undelivered": buckets[Bucket.UNDELIVERED],
        "invalid_reasons": _sub_counts(tally, "invalid"),
        "rejected_errors": dict(rejected),
        "field_drops": _sub_counts(tally, "drop"),
        "changed_since_delivery": int(tally["changed_since_delivery"]),
        "events_sent": sent,
        "attributed": int(tally["attributed"]),
        "match_key_coverage": {key: round(tally[f"coverage.{key}"] / sent, 4) if sent else 0.0 for key in MATCH_KEYS},
        "error_rate": round(errors / rows_read, 6) if rows_read else 0.0,
        "requests": requests,
        "retries": retries,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows_read / seconds, 1) if seconds > 0 else 0.0,
        "dry_run": dry_run,
    }


def _sub_counts(tally: Tally, prefix: str) -> dict[str, int]:
    start = len(prefix) + 1
    return {key[start:]: int(v) for key, v in sorted(tally.items()) if key.startswith(prefix + ".") and v}


def format_summary(summary: RunSummary) -> str:
    """Render the summary as one readable, aligned table for the task log."""
    lines = [f"{'rows read':<28}{summary['rows_read']:>14,}"]
    for bucket, rows in bucket_counts(summary).items():
        lines.append(f"  {bucket:<26}{rows:>14,}")
    for title, reasons in (
        ("invalid by reason", summary["invalid_reasons"]),
        ("rejected by Gravity", summary["rejected_errors"]),
    ):
        for reason, count in reasons.items():
            lines.append(f"    {title}: {reason:<40.40} {count:>8,}")
    for reason, count in summary["field_drops"].items():
        lines.append(f"  field dropped: {reason:<24}{count:>8,}")
    coverage = "  ".join(f"{k} {v:.0%}" for k, v in summary["match_key_coverage"].items())
    lines += [
        f"{'events sent':<28}{summary['events_sent']:>14,}",
        f"{'changed since delivery':<28}{summary['changed_since_delivery']:>14,}",
        f"{'match-key coverage':<28}{coverage}",
        f"{'error rate':<28}{summary['error_rate']:>14.2%}",
        f"{'requests / retries':<28}{summary['requests']:>8,} / {summary['retries']:,}",
        f"{'seconds / rows per second':<28}{summary['seconds']:>8,.1f} / {summary['rows_per_second']:,.0f}",
    ]
    if summary["dry_run"]:
        lines.append("DRY RUN: nothing was sent; events that would have been sent are counted as undelivered.")
    return "\n".join(lines)
