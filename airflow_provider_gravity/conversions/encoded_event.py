"""
The wire type of one encoded event, and the reason of an event that cannot be encoded.

What the encoder (``events/``) writes and the client (``api/``) sends. This module imports nothing, so that every
stage may import it without importing another stage.
"""

from __future__ import annotations

from typing import NamedTuple

#: The reason of a row whose text cannot travel as UTF-8 (a lone surrogate from a hand-built frame).
UNENCODABLE = "unencodable_text"


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
