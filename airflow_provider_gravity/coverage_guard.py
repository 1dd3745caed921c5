"""
The match-key guard: a night whose match-key coverage collapsed (an emptied e-mail column, a new phone format)
is refused, after a first sample of rows and again from the run's summary, instead of being delivered green.

Two floors per match key (``em``, ``ph``, ``fn_ln``, ``external_id``, ``click_id``), the higher one wins:

- ``min_match_coverage``: a fixed share of events, e.g. ``{"em": 0.5}``;
- ``max_coverage_drop``: a share of the key's median over the task's last successful runs (the run history),
  e.g. ``0.5`` refuses a night under half its usual coverage.

The figures are shares and key names only: nothing here sees a value.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_gravity.conversions.match_keys import MATCH_KEY_BITS, MATCH_KEYS
from airflow_provider_gravity.exceptions import GravityRunRefused
from airflow_provider_gravity.history.baseline import CoverageBaseline

if TYPE_CHECKING:
    import pandas as pd

    from airflow_provider_gravity.conversions.events.build import EventSettings
    from airflow_provider_gravity.conversions.pii.user_fields import PiiCache
    from airflow_provider_gravity.conversions.run.summary import MatchKeyGuardEntry

#: Rows read before the first decision, at most; the pipeline gets them only when the sample passes.
SAMPLE_ROWS = 10_000
#: Fewer valid events than this in the sample are too few to refuse a night on; the end of the run decides.
MIN_SAMPLE_EVENTS = 100
#: Successful runs the history needs before ``max_coverage_drop`` is checked.
MIN_BASELINE_RUNS = 3


@dataclass(frozen=True)
class CoverageFloor:
    """
    The least coverage a match key may have in this run.

    :param key: the match key, as in the summary's ``match_key_coverage``.
    :param floor: the least share of events (0 to 1).
    :param rule: where the floor comes from, in words.
    """

    key: str
    floor: float
    rule: str


@dataclass(frozen=True)
class CoverageBreach:
    """
    A match key under its floor.

    :param floor: the floor it fell under.
    :param coverage: the key's share of events.
    :param events: how many events the share is of.
    :param stage: ``sample`` (before sending) or ``summary`` (after the run).
    """

    floor: CoverageFloor
    coverage: float
    events: int
    stage: str

    def message(self) -> str:
        where = (
            f"in a first sample of {self.events:,} events, before any was sent"
            if self.stage == "sample"
            else f"over the {self.events:,} events sent"
        )
        return (
            f"Match key {self.floor.key!r} covers {self.coverage:.2%} of events {where}, under its floor of "
            f"{self.floor.floor:.2%} ({self.floor.rule}). An upstream column may be empty or renamed: fix the "
            "query or the data, or lower the floor, then clear the task."
        )

    def to_json(self) -> MatchKeyGuardEntry:
        """Return the breach as the summary's ``match_key_guard`` entry."""
        return {
            "key": self.floor.key,
            "coverage": round(self.coverage, 4),
            "floor": round(self.floor.floor, 4),
            "rule": self.floor.rule,
            "events": self.events,
            "stage": self.stage,
        }


class MatchKeysCollapsed(GravityRunRefused):
    """A match key's coverage fell under its floor; only a fix of the data or of the floor helps."""

    def __init__(self, breach: CoverageBreach, details: str = "") -> None:
        super().__init__(f"{breach.message()}{details}")
        self.breach = breach


def _shown(value: object) -> str:
    """``repr(value)``, cut short: an argument pasted wrong can be a megabyte, too long for a task log line."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:60]}... ({len(text):,} characters)"


def check_guard_arguments(min_match_coverage: Mapping[str, float] | None, max_coverage_drop: float | None) -> None:
    """Refuse anything but a mapping of known match keys to shares from 0 to 1 when the DAG is parsed."""
    if min_match_coverage is not None and not isinstance(min_match_coverage, Mapping):
        raise ValueError(
            'min_match_coverage must be a mapping of match key to share, e.g. {"em": 0.5}; '
            f"got {_shown(min_match_coverage)}."
        )
    for key, share in (min_match_coverage or {}).items():
        if key not in MATCH_KEYS:
            raise ValueError(
                f"min_match_coverage has an unknown match key {_shown(key)}; the keys are {tuple(MATCH_KEYS)}."
            )
        if not _is_share(share, low_open=False):
            raise ValueError(f"min_match_coverage[{key!r}] is a share between 0 and 1, got {_shown(share)}.")
    if max_coverage_drop is not None and not _is_share(max_coverage_drop, low_open=True):
        raise ValueError(
            f"max_coverage_drop is a share of the median, above 0 and at most 1, got {max_coverage_drop!r}."
        )


def _is_share(value: Any, *, low_open: bool) -> bool:
    """
    Return whether ``value`` is a number (not a bool, text or None, which ``<=`` refuses with a ``TypeError``)
    in [0, 1], or (0, 1] with ``low_open``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    share = float(value)  # NaN compares false both ways: no share
    return (0 < share if low_open else 0 <= share) and share <= 1


def coverage_floors(
    min_match_coverage: Mapping[str, float] | None,
    max_coverage_drop: float | None,
    baseline: CoverageBaseline | None,
) -> list[CoverageFloor]:
    """Each guarded match key's floor, the higher of its fixed floor and its share of the median."""
    floors: dict[str, CoverageFloor] = {
        key: CoverageFloor(key, float(share), "min_match_coverage") for key, share in (min_match_coverage or {}).items()
    }
    if max_coverage_drop is not None and baseline is not None and baseline.runs >= MIN_BASELINE_RUNS:
        for key, median in baseline.medians.items():
            relative = CoverageFloor(
                key,
                max_coverage_drop * median,
                f"max_coverage_drop {max_coverage_drop:g} of its median {median:.2%} over the last "
                f"{baseline.runs} successful runs",
            )
            if relative.floor > 0 and (key not in floors or relative.floor > floors[key].floor):
                floors[key] = relative
    return [floors[key] for key in MATCH_KEYS if key in floors]


def first_breach(
    coverage: Mapping[str, float], floors: Iterable[CoverageFloor], *, events: int, stage: str
) -> CoverageBreach | None:
    """Return the breach of the first guarded key under its floor, in the order of :data:`MATCH_KEYS`; else ``None``."""
    for floor in floors:
        share = float(coverage.get(floor.key) or 0.0)
        if share < floor.floor:
            return CoverageBreach(floor, share, events, stage)
    return None


class SampledChunks:
    """
    The query's chunks with the first ones held back until they make :data:`SAMPLE_ROWS` rows (or the query
    ends), so that their coverage is known before the pipeline sends any of them; iterating gives every chunk
    once, in order, the held ones first.
    """

    def __init__(self, chunks: Iterator[pd.DataFrame]) -> None:
        self._chunks = chunks
        self.held: list[pd.DataFrame] = []
        rows = 0
        for frame in chunks:
            self.held.append(frame)
            rows += len(frame)
            if rows >= SAMPLE_ROWS:
                break

    def sample(self) -> pd.DataFrame:
        """Return the first :data:`SAMPLE_ROWS` rows, or all of them, with the column names of the column contract."""
        import pandas as pd

        from airflow_provider_gravity.conversions.read.columns import normalize_column_names

        if not self.held:
            return pd.DataFrame()
        frame = pd.concat(self.held, ignore_index=True) if len(self.held) > 1 else self.held[0].copy()
        frame.columns = normalize_column_names(frame.columns)
        return frame.iloc[:SAMPLE_ROWS].reset_index(drop=True)

    def __iter__(self) -> Iterator[pd.DataFrame]:
        while self.held:
            yield self.held.pop(0)
        yield from self._chunks


def sample_coverage(
    sample: pd.DataFrame, settings: EventSettings, now: float, cache: PiiCache | None
) -> tuple[dict[str, float], int]:
    """
    Each match key's share of the sample's valid events, built as the run builds them (``cache`` is the run's,
    so the run hashes the sample's values once). Rows the run would later skip as already delivered or
    duplicated count here too.

    :return: ``(coverage by match key, valid events)``.
    """
    from airflow_provider_gravity.conversions.events.build import build_events

    if sample.empty:
        return dict.fromkeys(MATCH_KEYS, 0.0), 0
    built = build_events(sample, settings, now, cache)
    bits = [coverage for coverage, reason in zip(built.coverage, built.reasons, strict=True) if reason is None]
    if not bits:
        return dict.fromkeys(MATCH_KEYS, 0.0), 0
    return {key: sum(1 for b in bits if b & bit) / len(bits) for key, bit in MATCH_KEY_BITS.items()}, len(bits)
