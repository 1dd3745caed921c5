"""What the pipeline sends through: one object that sends a batch and counts its requests and retries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from airflow_provider_gravity.conversions.api.wire import EventResult
from airflow_provider_gravity.conversions.encoded_event import EncodedEvent


class EventSender(Protocol):
    """
    Sends batches of events; :class:`~.client.GravityClient` is the one the operator uses.

    ``send_events`` is called from several threads at once; the counters are read after the run.
    """

    @property
    def requests_sent(self) -> int:
        """Requests sent so far, each retry included."""
        ...

    @property
    def retries(self) -> int:
        """Retries so far."""
        ...

    def send_events(self, events: Sequence[EncodedEvent]) -> list[EventResult]:
        """Send one batch and return one result per event, in the events' order."""
        ...
