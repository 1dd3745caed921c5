"""The wire type of one encoded event: what the encoder writes and the client sends; it imports nothing heavy."""

from __future__ import annotations

from typing import NamedTuple


class EncodedEvent(NamedTuple):
    """
    One event ready to send.

    :param event_name: the event's name, as in its JSON.
    :param event_id: the event's id, as in its JSON.
    :param json: the event as canonical JSON text (ASCII).
    """

    event_name: str
    event_id: str
    json: str
