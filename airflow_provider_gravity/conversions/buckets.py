"""
Where a source row can end: one :class:`Bucket` per row, and the one map from Gravity's statuses to buckets.
"""

from __future__ import annotations

from enum import StrEnum


class Bucket(StrEnum):
    """The bucket of one source row in the run summary; every row ends in exactly one."""

    #: Gravity accepted the event (``ok``, ``test_ok`` or ``skipped``).
    DELIVERED = "delivered"
    #: Gravity already had the event (its ``duplicate`` status).
    DUPLICATE = "duplicate"
    #: Gravity refused the event (any other status, or a request refused for it alone).
    REJECTED = "rejected"
    #: Refused before sending, with a named reason (``missing_event_id``, ``duplicate_in_run``, ...).
    INVALID = "invalid"
    #: The delivery log holds the event as delivered by an earlier run: not sent again.
    SKIPPED_DELIVERED = "skipped_delivered"
    #: Not known to be delivered (Gravity unavailable, its answer missing, a dry run): a retry sends it.
    UNDELIVERED = "undelivered"


#: Gravity's per-event status → bucket; any status not here is :attr:`Bucket.REJECTED`.
BUCKET_OF_STATUS: dict[str, Bucket] = {
    "ok": Bucket.DELIVERED,
    "test_ok": Bucket.DELIVERED,
    "skipped": Bucket.DELIVERED,
    "duplicate": Bucket.DUPLICATE,
}
#: The statuses that mean Gravity has the event.
DELIVERED_STATUSES = frozenset(BUCKET_OF_STATUS)
#: Buckets whose events the delivery log holds as delivered, never to be sent again.
DELIVERED_BUCKETS = frozenset({Bucket.DELIVERED, Bucket.DUPLICATE})
#: Buckets of the dead letter: the delivery log's rows a person should look at.
DEAD_LETTER_BUCKETS = (Bucket.REJECTED, Bucket.INVALID)


def bucket_of_status(status: str) -> Bucket:
    """Return the bucket of an event Gravity answered with ``status``."""
    return BUCKET_OF_STATUS.get(status, Bucket.REJECTED)
