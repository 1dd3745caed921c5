"""The operator with its Gravity hook swapped for a sink that answers ``ok`` without HTTP or JSON.

Everything else is the real operator: the SQL hook, the server-side cursor, chunking, validation, PII
hashing, in-run dedup, batching across ``max_concurrency`` threads and per-event accounting. The
difference between this and the HTTP run is the cost of encoding, sending and Gravity's answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

from airflow_provider_gravity.conversions.api.wire import EventResult, event_key
from airflow_provider_gravity.operators.send_conversions import SendConversionsOperator


class NullSinkClient:
    """Stands in for ``GravityClient``: every event is acknowledged as ``ok`` at once."""

    def __init__(self) -> None:
        self.requests_sent = 0
        self.retries = 0

    def send_events(self, events: Sequence[dict]) -> list[EventResult]:
        self.requests_sent += 1
        return [EventResult(event_key(event)[1], "ok") for event in events]

    def close(self) -> None:
        pass


class NullSinkHook:
    """Stands in for ``GravityHook``, handing out a :class:`NullSinkClient`."""

    hash_phone_with_plus = False

    def __init__(self) -> None:
        self.client = NullSinkClient()

    def get_conn(self) -> NullSinkClient:
        return self.client

    def send_events(self, events: Sequence[dict]) -> list[EventResult]:
        return self.client.send_events(events)

    def close(self) -> None:
        pass


class NullSinkSendConversionsOperator(SendConversionsOperator):
    """``SendConversionsOperator`` whose events go nowhere."""

    @cached_property
    def gravity_hook(self) -> NullSinkHook:  # type: ignore[override]
        return NullSinkHook()
