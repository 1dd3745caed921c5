"""The task state store's contract (get/set/delete) over a dict, as it behaves between two tries of a task."""

from __future__ import annotations

import json
from typing import Any


class DictStore:
    """
    Keeps what a real store keeps, JSON, not live objects; counts its writes.

    :ivar values: the stored values by key.
    :ivar writes: how many times a value was set.
    """

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.writes = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.writes += 1
        self.values[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.values.pop(key, None)
