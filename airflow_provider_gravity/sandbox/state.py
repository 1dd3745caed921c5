"""The sandbox's memory: its clock, the dedup window, accepted events and counters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from airflow_provider_gravity.sandbox.faults import FaultQueue
from airflow_provider_gravity.sandbox.validation import validate_event


class SandboxState:
    """
    Everything the sandbox remembers, guarded by one lock.

    Dedup keeps, per ``event_name``, a dict ``event_id -> time it was last accepted``. Every
    event of one request shares the same ``now`` float object, so a million remembered keys cost
    little more than their ``event_id`` strings (``store_events=False`` is for such benchmarks).

    :param dedup_window_seconds: an event seen again within this time is a ``duplicate``.
    :param max_event_age_seconds: reject older ``event_time`` values; None for no limit.
    :param max_future_seconds: reject ``event_time`` values further ahead of the clock.
    :param store_events: keep accepted events for ``GET /sandbox/events``.
    :param clock: returns Unix seconds; ``time.time`` by default. Offsets set through
        ``/sandbox/clock`` are added to it.
    """

    def __init__(
        self,
        *,
        dedup_window_seconds: float = 48 * 3600,
        max_event_age_seconds: float | None = None,
        max_future_seconds: float = 300,
        store_events: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self.dedup_window_seconds = dedup_window_seconds
        self.max_event_age_seconds = max_event_age_seconds
        self.max_future_seconds = max_future_seconds
        self.store_events = store_events
        self._clock = clock or time.time
        self.faults = FaultQueue()
        self.reset()

    def reset(self) -> None:
        """Forget events, counters, faults and the clock offset."""
        with self.lock:
            self.clock_offset = 0.0
            self.faults.clear()
            self.events: list[dict] = []
            self._accepted_at: dict[str, dict[str, float]] = {}
            self._redeliveries: dict[tuple[str, str], int] = {}
            self.unique_events = 0
            self.requests = 0
            self.events_received = 0
            self.by_status = {"ok": 0, "duplicate": 0, "error": 0}
            self.http_statuses: dict[str, int] = {}
            self.largest_batch = 0
            self.plaintext_pii_seen = 0
            self.redelivered = 0
            self.faults_served = 0
            self.auth_failures = 0
            self.max_deliveries_of_one_event = 0

    def now(self) -> float:
        return self._clock() + self.clock_offset

    def set_now(self, epoch: float) -> None:
        with self.lock:
            self.clock_offset = epoch - self._clock()

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.clock_offset += seconds

    def count_response(self, status: int | str) -> None:
        with self.lock:
            key = str(status)
            self.http_statuses[key] = self.http_statuses.get(key, 0) + 1

    def process_batch(self, data: list) -> tuple[list[dict], dict[str, int]]:
        """
        Validate, deduplicate and store one batch.

        :return: the per-event results in request order, and this batch's counts by status
            plus ``plaintext_pii``.
        """
        now = self.now()
        oldest = None if self.max_event_age_seconds is None else now - self.max_event_age_seconds
        max_future = self.max_future_seconds
        checked = []
        plaintext = 0
        for event in data:
            error, seen = validate_event(event, now, oldest, max_future)
            plaintext += seen
            checked.append(error)
        with self.lock:
            return self._commit(data, checked, now, plaintext)

    def _commit(
        self, data: list, errors: list[str | None], now: float, plaintext: int
    ) -> tuple[list[dict], dict[str, int]]:
        window = self.dedup_window_seconds
        accepted_at = self._accepted_at
        store = self.events.append if self.store_events else None
        results: list[dict[str, Any]] = []
        ok = duplicate = rejected = 0
        for event, error in zip(data, errors, strict=True):
            if error is not None:
                event_id = event.get("event_id") if type(event) is dict else None
                results.append(
                    {
                        "event_id": event_id if type(event_id) is str else None,
                        "status": "error",
                        "error": error,
                    }
                )
                rejected += 1
                continue
            event_id = event["event_id"]
            seen_for_name = accepted_at.get(event["event_name"])
            if seen_for_name is None:
                seen_for_name = accepted_at[event["event_name"]] = {}
            last_accepted = seen_for_name.get(event_id)
            # A clock moved backwards (``set``) leaves now < last_accepted: still a duplicate.
            if last_accepted is not None and now - last_accepted < window:
                results.append({"event_id": event_id, "status": "duplicate"})
                duplicate += 1
                continue
            if last_accepted is None:
                self.unique_events += 1
            else:
                self._count_redelivery((event["event_name"], event_id))
            seen_for_name[event_id] = now
            if store is not None:
                store(event)
            user_data = event.get("user_data")
            attributed = user_data is not None and "click_id" in user_data
            results.append({"event_id": event_id, "status": "ok", "attributed": attributed})
            ok += 1
        self.events_received += len(data)
        self.by_status["ok"] += ok
        self.by_status["duplicate"] += duplicate
        self.by_status["error"] += rejected
        self.plaintext_pii_seen += plaintext
        self.largest_batch = max(self.largest_batch, len(data))
        if self.max_deliveries_of_one_event == 0 and ok:
            self.max_deliveries_of_one_event = 1
        counts = {"ok": ok, "duplicate": duplicate, "error": rejected, "plaintext_pii": plaintext}
        return results, counts

    def _count_redelivery(self, key: tuple[str, str]) -> None:
        deliveries = self._redeliveries.get(key, 1) + 1
        self._redeliveries[key] = deliveries
        self.redelivered += 1
        self.max_deliveries_of_one_event = max(self.max_deliveries_of_one_event, deliveries)

    def deliveries(self, event_name: str, event_id: str) -> int:
        """How many times this event was accepted as new over the sandbox's lifetime."""
        with self.lock:
            if event_id not in self._accepted_at.get(event_name, {}):
                return 0
            return self._redeliveries.get((event_name, event_id), 1)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "events_received": self.events_received,
                "by_status": dict(self.by_status),
                "http_statuses": dict(self.http_statuses),
                "largest_batch": self.largest_batch,
                "plaintext_pii_seen": self.plaintext_pii_seen,
                "redelivered": self.redelivered,
                "unique_events": self.unique_events,
                "stored_events": len(self.events),
                "faults_served": self.faults_served,
                "auth_failures": self.auth_failures,
                "max_deliveries_of_one_event": self.max_deliveries_of_one_event,
                "now": self.now(),
            }

    def stored_events(
        self, event_name: str | None = None, event_id: str | None = None, limit: int | None = None
    ) -> list[dict]:
        """Return the accepted events, oldest first; with ``limit``, only the most recent ``limit`` of them."""
        with self.lock:
            events = [
                event
                for event in self.events
                if (event_name is None or event["event_name"] == event_name)
                and (event_id is None or event["event_id"] == event_id)
            ]
        return events if limit is None else events[max(len(events) - limit, 0) :]
