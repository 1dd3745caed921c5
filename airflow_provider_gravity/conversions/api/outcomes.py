"""Send one batch and turn Gravity's answer into a bucket per event, splitting batches Gravity refuses whole."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import NamedTuple, TypeVar

from airflow_provider_gravity.conversions.api.wire import EventResult
from airflow_provider_gravity.conversions.buckets import Bucket, bucket_of_status
from airflow_provider_gravity.conversions.encoded_event import UNENCODABLE
from airflow_provider_gravity.conversions.errors import EventEncodingError, GravityRequestRejected

_Event = TypeVar("_Event")


class Outcome(NamedTuple):
    """
    Where one sent event ends.

    :param bucket: ``delivered``, ``duplicate``, ``rejected``, ``invalid`` or ``undelivered``.
    :param detail: the reason shown in the summary for a rejected event (Gravity's error, or the HTTP status).
    :param status_text: Gravity's status and error, for the delivery log.
    :param attributed: Gravity attributed the conversion to an ad.
    :param sent: the event was in a request Gravity answered (``False`` when no answer came).
    """

    bucket: Bucket
    detail: str | None
    status_text: str | None
    attributed: bool = False
    sent: bool = True


def outcome_of(result: EventResult) -> Outcome:
    """Map one :class:`EventResult` to its bucket."""
    if result.status == "ok" and result.attributed is None:
        return _DELIVERED_OK
    if result.status == "missing":
        return Outcome(Bucket.UNDELIVERED, None, None)  # sent, but Gravity's answer did not settle it
    bucket = bucket_of_status(result.status)
    if bucket != Bucket.REJECTED:
        return Outcome(bucket, None, result.status, bool(result.attributed))
    detail = result.error or f"status {result.status}"
    return Outcome(Bucket.REJECTED, detail, f"{result.status}: {detail}")


def outcomes_of(results: Iterable[EventResult]) -> list[Outcome]:
    """Map each result to its bucket; a batch of plain ``ok`` results (nearly every one) is checked in C."""
    results = results if isinstance(results, list) else list(results)  # a sender may yield them one by one
    count = len(results)
    if list(map(_status, results)).count("ok") == count and list(map(_attributed, results)).count(None) == count:
        return [_DELIVERED_OK] * count
    return [outcome_of(result) for result in results]


_status, _attributed = attrgetter("status"), attrgetter("attributed")
_DELIVERED_OK = Outcome(Bucket.DELIVERED, None, "ok", False)
_UNSENT = Outcome(Bucket.UNDELIVERED, None, None, sent=False)


def send_with_split(
    send: Callable[[Sequence[_Event]], list[EventResult]], events: Sequence[_Event]
) -> tuple[list[Outcome], Exception | None]:
    """
    Send ``events`` and return one :class:`Outcome` per event, and the error that stopped sending, if any.

    When Gravity refuses the whole request (400/413/422), each half is sent on its own until the refused
    events are isolated; each isolated event is ``rejected`` with the HTTP status and Gravity's message. An
    event the request encoder cannot write (text that is not valid Unicode, from a hand-built frame) is
    isolated the same way and is ``invalid`` (``unencodable_text``); nothing is sent for it.

    Any other error stops the splitting: the halves Gravity already answered keep their outcomes (they are
    delivered, and must be recorded as such), the others are ``undelivered``, and the error is returned for
    the caller to stop the run.
    """
    try:
        return outcomes_of(send(events)), None
    except GravityRequestRejected as refused:
        if len(events) == 1:
            detail = f"HTTP {refused.status}: {refused.message or 'refused'}"
            return [Outcome(Bucket.REJECTED, detail, detail)], None
    except EventEncodingError:
        if len(events) == 1:
            return [Outcome(Bucket.INVALID, UNENCODABLE, UNENCODABLE, sent=False)], None
    except Exception as failure:  # noqa: BLE001 - returned to the pipeline, which stops the run with it
        return [_UNSENT] * len(events), failure
    middle = len(events) // 2
    first, error = send_with_split(send, events[:middle])
    if error is not None:
        return first + [_UNSENT] * (len(events) - middle), error
    second, error = send_with_split(send, events[middle:])
    return first + second, error
