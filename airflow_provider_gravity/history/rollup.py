"""
The day figures of the run history, kept summed per ``(day, dag_id, task_id)`` so that the Gravity view reads
a few rows a day, not every try's row and its JSON.

A task instance (dag, task, run, map index) counts once, on the day of its last try, with the figures of that
try, the try whose summary covers the whole window. One correction makes them what Gravity accepted: a retry that
could not resume (no task state store, ``durable=False``, a state store that failed) reads the whole window again,
and the delivery log makes it skip, as ``skipped_delivered``, what its earlier tries delivered. Those rows were
delivered by this task instance, that day, so they count as ``delivered`` (or ``duplicate``, for what the
earlier tries found Gravity already held), not as skipped:

    carried = min(last.skipped_delivered - min(try.skipped_delivered), sum(earlier.delivered + earlier.duplicate))

The first term is what the last try skipped beyond what the first try already skipped (events delivered by other
runs); the second caps it by what the earlier tries can have delivered, the exact figure when no try resumed
(each try's ``delivered`` is then its own). A retry that resumed counts the earlier tries' events as delivered
already and skips nothing more, so both terms leave it as it is.

``day_figures`` is the one definition of these figures: the writer adds each try's change to the rollup tables
(``after - before`` of its task instance, additions that commute, so concurrent writers need no lock), the
migration fills them from an existing history, and the view computes them from the history rows directly when
no rollup is there. The rollup tables are declared in :mod:`airflow_provider_gravity.storage.run_history_tables`.
This module does not import Airflow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from airflow_provider_gravity.storage.run_history_tables import COUNT_COLUMNS, COVERAGE_COLUMNS

#: The columns of a history row that the day figures read.
FIGURE_SOURCE_COLUMNS = (
    "id",
    "dag_id",
    "task_id",
    "run_id",
    "map_index",
    "day",
    *COUNT_COLUMNS,
    *COVERAGE_COLUMNS.values(),
    "invalid_reasons",
    "rejected_errors",
)
#: Summed per day: task instances (``runs``), the buckets and counters, coverage weighted by events sent.
SUM_COLUMNS = ("runs", *COUNT_COLUMNS, *COVERAGE_COLUMNS.values())
REASON_KINDS = {"invalid": "invalid_reasons", "rejected": "rejected_errors"}
#: The key of the row saying the rollup holds the whole history (no DAG id is empty).
COMPLETE_MARK = {"day": date(1970, 1, 1), "dag_id": "", "task_id": ""}


@dataclass
class Figures:
    """What one task instance, or a group of them, adds to a day: sums and reasons' rows."""

    sums: dict[str, float] = field(default_factory=dict)
    reasons: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, other: Figures, sign: int = 1) -> None:
        for name, value in other.sums.items():
            self.sums[name] = self.sums.get(name, 0) + sign * value
        for key, rows in other.reasons.items():
            self.reasons[key] = self.reasons.get(key, 0) + sign * rows


def day_figures(tries: Sequence[Any]) -> tuple[date, Figures]:
    """
    Compute the day and figures of one task instance from its tries (history rows, oldest first): those of the last
    try, with the rows it skipped because an earlier try delivered them counted as delivered (module doc).
    """
    last = tries[-1]
    earlier = tries[:-1]
    counts = {name: int(last[name] or 0) for name in COUNT_COLUMNS}
    if earlier:
        first_skipped = min(int(row["skipped_delivered"] or 0) for row in tries)
        earlier_delivered = sum(int(row["delivered"] or 0) for row in earlier)
        earlier_duplicate = sum(int(row["duplicate"] or 0) for row in earlier)
        carried = min(counts["skipped_delivered"] - first_skipped, earlier_delivered + earlier_duplicate)
        carried = max(0, carried)
        as_delivered = min(carried, earlier_delivered)
        counts["delivered"] += as_delivered
        counts["duplicate"] += carried - as_delivered
        counts["skipped_delivered"] -= carried
    sums: dict[str, float] = {"runs": 1, **counts}
    sent = counts["events_sent"]
    for column in COVERAGE_COLUMNS.values():
        sums[column] = float(last[column] or 0.0) * sent
    reasons: dict[tuple[str, str], int] = {}
    for kind, column in REASON_KINDS.items():
        for reason, rows in _json_dict(last[column]).items():
            try:
                reasons[(kind, str(reason))] = reasons.get((kind, str(reason)), 0) + int(rows)
            except (TypeError, ValueError):
                continue
    return _as_date(last["day"]), Figures(sums, reasons)


def group_figures(rows: Iterable[Any]) -> dict[tuple[date, str, str], Figures]:
    """
    Compute the figures per ``(day, dag_id, task_id)`` of history rows ordered by task instance, then id; each group
    also holds ``tries``, its rows.
    """
    groups: dict[tuple[date, str, str], Figures] = {}
    tries: list[Mapping[str, Any]] = []
    key: tuple[Any, ...] | None = None

    def flush() -> None:
        if tries:
            day, figures = day_figures(tries)
            groups.setdefault((day, tries[-1]["dag_id"], tries[-1]["task_id"]), Figures()).add(figures)

    for row in rows:
        instance = (row["dag_id"], row["task_id"], row["run_id"], row["map_index"])
        if instance != key:
            flush()
            tries, key = [], instance
        tries.append(row)
        group = groups.setdefault((_as_date(row["day"]), row["dag_id"], row["task_id"]), Figures())
        group.sums["tries"] = group.sums.get("tries", 0) + 1
    flush()
    return groups


def reason_key(reason: str) -> str:
    return hashlib.sha256(reason.encode("utf-8", "surrogatepass")).hexdigest()


def _json_dict(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
