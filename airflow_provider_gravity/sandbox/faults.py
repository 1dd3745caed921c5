"""
Scripted faults served by the sandbox to the next requests to ``/gateway/events``.

A fault spec is a small JSON object, ``{"kind": ..., "count": N, "after": K}``: let ``K``
healthy requests pass, then serve the fault to the next ``N`` requests. Specs form a queue
served in order. ``poison`` is the exception: it is not queued but stays active until reset.
"""

from __future__ import annotations

from collections import deque
from typing import Any

#: Upper bound of a ``slow`` or ``stall`` fault, so a forgotten fault cannot hang a server forever.
MAX_DELAY_SECONDS = 600.0

_COMMON_KEYS = {"kind", "count", "after"}
_KIND_KEYS = {
    "status": {"status", "retry_after", "error"},
    "drop": {"process"},
    "slow": {"seconds"},
    "stall": {"seconds"},
    "poison": {"event_ids"},
}


class FaultSpecError(ValueError):
    """A fault spec posted to ``/sandbox/faults`` is malformed."""


def _non_negative_int(spec: dict, key: str, default: int, minimum: int) -> int:
    value = spec.get(key, default)
    if type(value) is not int or value < minimum:
        raise FaultSpecError(f"fault {key!r} must be an integer >= {minimum}")
    return value


def _delay(spec: dict, default: float) -> float:
    seconds = spec.get("seconds", default)
    if type(seconds) not in (int, float) or not 0 <= seconds <= MAX_DELAY_SECONDS:
        raise FaultSpecError(f"fault 'seconds' must be a number between 0 and {MAX_DELAY_SECONDS:g}")
    return float(seconds)


def parse_fault_spec(spec: Any) -> dict:
    """
    Check one fault spec and return it with defaults filled in.

    :raises FaultSpecError: on an unknown kind, an unknown key or a bad value.
    """
    if type(spec) is not dict:
        raise FaultSpecError("each fault must be an object")
    kind = spec.get("kind")
    if kind not in _KIND_KEYS:
        raise FaultSpecError(f"fault 'kind' must be one of {sorted(_KIND_KEYS)}")
    unknown = set(spec) - _COMMON_KEYS - _KIND_KEYS[kind]
    if unknown:
        raise FaultSpecError(f"unknown key(s) for a {kind!r} fault: {sorted(unknown)}")
    parsed: dict[str, Any] = {
        "kind": kind,
        "count": _non_negative_int(spec, "count", 1, 1),
        "after": _non_negative_int(spec, "after", 0, 0),
    }
    if kind == "status":
        status = spec.get("status", 503)
        if type(status) is not int or not 200 <= status <= 599:
            raise FaultSpecError("fault 'status' must be an HTTP status between 200 and 599")
        parsed["status"] = status
        if "retry_after" in spec:
            retry_after = spec["retry_after"]
            if type(retry_after) not in (str, int):
                raise FaultSpecError("fault 'retry_after' must be a string (seconds or HTTP date) or int")
            parsed["retry_after"] = str(retry_after)
        parsed["error"] = str(spec.get("error", f"sandbox fault: HTTP {status}"))
    elif kind == "drop":
        parsed["process"] = bool(spec.get("process", False))
    elif kind == "slow":
        parsed["seconds"] = _delay(spec, 1.0)
    elif kind == "stall":
        parsed["seconds"] = _delay(spec, MAX_DELAY_SECONDS)
    else:
        event_ids = spec.get("event_ids")
        if type(event_ids) is not list or not event_ids or any(type(i) is not str for i in event_ids):
            raise FaultSpecError("a 'poison' fault needs 'event_ids', a non-empty array of strings")
        parsed["event_ids"] = list(event_ids)
    return parsed


class FaultQueue:
    """The faults still to serve. Not thread-safe: callers hold the sandbox lock."""

    def __init__(self) -> None:
        self._queue: deque[dict] = deque()
        self.poisoned_event_ids: set[str] = set()

    def add(self, specs: list, *, replace: bool) -> None:
        """
        Validate ``specs`` (all or nothing) and queue them.

        :param replace: drop every pending fault, poison included, before adding these.
        """
        parsed = [parse_fault_spec(spec) for spec in specs]
        if replace:
            self.clear()
        for spec in parsed:
            if spec["kind"] == "poison":
                self.poisoned_event_ids.update(spec["event_ids"])
            else:
                self._queue.append(spec)

    def clear(self) -> None:
        self._queue.clear()
        self.poisoned_event_ids.clear()

    def next_fault(self) -> dict | None:
        """Return the fault the current request must suffer, or None for a healthy request."""
        if not self._queue:
            return None
        head = self._queue[0]
        if head["after"] > 0:
            head["after"] -= 1
            return None
        head["count"] -= 1
        if head["count"] == 0:
            self._queue.popleft()
        return dict(head)

    def pending(self) -> dict:
        """Return what remains: the queue in order and the poisoned event ids."""
        return {
            "queue": [dict(spec) for spec in self._queue],
            "poisoned_event_ids": sorted(self.poisoned_event_ids),
        }
