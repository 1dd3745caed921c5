"""
The wire type of encoded events, one at a time or a batch of them, and the reason of an event that cannot be
encoded.

What the encoder (``events/``) writes and the client (``api/``) sends. This module imports nothing of the package,
so that every stage may import it without importing another stage.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple, overload

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


class EncodedEvents(Sequence[EncodedEvent]):
    """
    A batch of events ready to send, held as three aligned columns: what the pipeline hands to the client, without
    an object an event. It reads as a sequence of :class:`EncodedEvent` (made when read); a slice is a batch too.

    :param event_names: each event's name, as in its JSON.
    :param event_ids: each event's id, as in its JSON.
    :param texts: each event as canonical JSON text (ASCII).
    :raises ValueError: when the columns differ in length.
    """

    __slots__ = ("event_ids", "event_names", "texts")

    def __init__(self, event_names: list[str], event_ids: list[str], texts: list[str]) -> None:
        if not len(event_names) == len(event_ids) == len(texts):
            raise ValueError(
                f"The columns of a batch differ in length: {len(event_names)} names, {len(event_ids)} ids, "
                f"{len(texts)} texts"
            )
        self.event_names = event_names
        self.event_ids = event_ids
        self.texts = texts

    def __len__(self) -> int:
        return len(self.texts)

    @overload
    def __getitem__(self, index: int) -> EncodedEvent: ...

    @overload
    def __getitem__(self, index: slice) -> EncodedEvents: ...

    def __getitem__(self, index: int | slice) -> EncodedEvent | EncodedEvents:
        if isinstance(index, slice):
            return EncodedEvents(self.event_names[index], self.event_ids[index], self.texts[index])
        return EncodedEvent(self.event_names[index], self.event_ids[index], self.texts[index])

    def __iter__(self) -> Iterator[EncodedEvent]:
        return map(EncodedEvent, self.event_names, self.event_ids, self.texts)

    def __repr__(self) -> str:
        return f"EncodedEvents({len(self)} events)"  # never the texts: they hold hashed PII
