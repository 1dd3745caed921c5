"""Gravity's wire format: a request body from encoded events, and Gravity's answer as one result per event sent."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from itertools import repeat
from operator import methodcaller
from typing import Any, Literal, NamedTuple

import msgspec

from airflow_provider_gravity.conversions.buckets import DELIVERED_STATUSES
from airflow_provider_gravity.conversions.encoded_event import EncodedEvent, EncodedEvents
from airflow_provider_gravity.conversions.errors import EventEncodingError, GravityResponseError

#: What :meth:`~.client.GravityClient.send_events` takes: events the pipeline encoded, or event dicts.
Event = EncodedEvent | Mapping[str, Any]
MAX_EVENTS_PER_REQUEST = 1_000
_KNOWN_STATUSES = DELIVERED_STATUSES | {"error"}
#: The deepest answer read: ``{"results": [{"error": {...}}]}`` is 4 levels; a deeper body is not Gravity's answer.
MAX_ANSWER_DEPTH = 32
_Scalar = str | int | float | bool | None
#: An answer of scalars in an object of results, decoded as the generic decoder would (1.3 ms for 1,000 results,
#: where the generic decoder and a walk to check the depth take 3).
_PLAIN_ANSWER = msgspec.json.Decoder(dict[str, list[dict[str, _Scalar]] | _Scalar])


class _PlainOk(msgspec.Struct, forbid_unknown_fields=True):
    """One result that says ``ok`` and nothing else, as most are."""

    event_id: str
    status: Literal["ok"]


class _AllPlainOk(msgspec.Struct, forbid_unknown_fields=True):
    """An answer holding only results that say ``ok`` and nothing else."""

    results: list[_PlainOk]


#: Decodes, in C, exactly the answers whose every result is ``{"event_id": <text>, "status": "ok"}`` (a repeated key
#: keeps its last value, as the generic decoder does); refuses any other answer at its first difference.
_ALL_PLAIN_OK = msgspec.json.Decoder(_AllPlainOk)


class EventResult(NamedTuple):
    """
    Gravity's verdict on one event of a request.

    :param event_id: the ``event_id`` of the event sent.
    :param status: Gravity's status: ``ok``, ``duplicate``, ``test_ok``, ``skipped`` (delivered) or ``error``;
        ``missing`` when the response held no result, or contradictory results, for this event.
    :param error: Gravity's error message for a rejected event.
    :param attributed: whether Gravity attributed the conversion to an ad, when it says so.
    """

    event_id: str
    status: str
    error: str | None = None
    attributed: bool | None = None

    @property
    def delivered(self) -> bool:
        """Whether Gravity holds this event now (accepted, or already held from an earlier send)."""
        return self.status in DELIVERED_STATUSES


def encode_body(events: Sequence[Event]) -> bytes:
    """
    Encode the request body ``{"data": [...]}`` as JSON bytes: encoded events (an :class:`EncodedEvents` batch, as
    the pipeline sends, or :class:`EncodedEvent` objects) are joined as they are, event dicts are written with
    msgspec.

    :raises EventEncodingError: for an event JSON cannot carry (text that is not valid Unicode).
    """
    try:
        if isinstance(events, EncodedEvents):
            return ('{"data":[' + ",".join(events.texts) + "]}").encode("ascii")
        encoded = [event.json for event in events if isinstance(event, EncodedEvent)]
        if len(encoded) == len(events):  # one join, one encode
            return ('{"data":[' + ",".join(encoded) + "]}").encode("ascii")
        texts = [
            event.json.encode("ascii") if isinstance(event, EncodedEvent) else msgspec.json.encode(event)
            for event in events
        ]
    except (UnicodeError, msgspec.EncodeError, OverflowError, TypeError) as error:
        raise EventEncodingError(f"An event cannot be written as JSON ({type(error).__name__}).") from None
    return b'{"data":[' + b",".join(texts) + b"]}"


def event_keys(events: Sequence[Event]) -> list[tuple[str | None, str]]:
    """Return each event's ``(event_name, event_id)``, as Gravity's results name it (see :func:`event_key`)."""
    if isinstance(events, EncodedEvents):
        return list(zip(events.event_names, events.event_ids, strict=True))
    return [event_key(event) for event in events]


def event_key(event: Event) -> tuple[str | None, str]:
    """Return an event's ``(event_name, event_id)``, as Gravity's results name it."""
    if isinstance(event, EncodedEvent):
        return event.event_name, event.event_id
    return event.get("event_name"), str(event.get("event_id"))


def decode_answer(body: bytes) -> Any:
    """
    Decode an answer's JSON, whatever the body: every way it can fail to be JSON Gravity could have sent is one error.

    :raises GravityResponseError: for a body that is not JSON (or not UTF-8), one the decoder cannot take
        (``RecursionError`` at about 1,000 levels, numbers out of range), or one nested deeper than
        :data:`MAX_ANSWER_DEPTH`: what is decoded is shallow enough for anything to read it, ``str()`` included.
    """
    try:
        return _PLAIN_ANSWER.decode(body)  # nearly every answer: its type bounds its depth, nothing to check
    except msgspec.DecodeError:
        pass
    try:
        payload = msgspec.json.decode(body)
    except RecursionError:
        raise GravityResponseError(f"not Gravity's answer: JSON nested more than {MAX_ANSWER_DEPTH} levels") from None
    except Exception as error:  # noqa: BLE001 - any failure to decode a body means it is not Gravity's answer
        raise GravityResponseError(f"not Gravity's answer: not JSON ({type(error).__name__})") from None
    if not _nested_at_most(payload, MAX_ANSWER_DEPTH):
        raise GravityResponseError(f"not Gravity's answer: JSON nested more than {MAX_ANSWER_DEPTH} levels")
    return payload


def _nested_at_most(value: Any, depth: int) -> bool:
    """Whether ``value`` (decoded JSON) nests at most ``depth`` arrays and objects, checked without recursion."""
    level: list[Any] = [value]
    for _ in range(depth):
        inner = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item if isinstance(item, list) else ())
            if isinstance(child, dict | list)
        ]
        if not inner:
            return True
        level = inner
    return False


def results_of(body: bytes) -> list[Any]:
    """
    Return the ``results`` list of a 2xx answer's body.

    :raises GravityResponseError: for a body that is not JSON Gravity could have sent, or has no ``results`` list.
    """
    payload = decode_answer(body)
    results = payload.get("results") if isinstance(payload, dict) else None
    if not isinstance(results, list):
        raise GravityResponseError("not Gravity's answer: no 'results' list")
    return results


def answer_results(
    body: bytes, keys: Sequence[tuple[str | None, str]], scrub: Callable[[object], str] = str
) -> list[EventResult]:
    """
    Return one result per event sent, in the events' order, from a 2xx answer's body (see :func:`match_results`).

    An answer that is a plain ``ok`` for each event, in order, is read without a dict per result: the same results
    :func:`match_results` gives it, in about half the time (1,000 results: 0.27 ms against 0.47).

    :raises GravityResponseError: for a body that is not JSON Gravity could have sent, or has no ``results`` list.
    """
    try:
        plain = _ALL_PLAIN_OK.decode(body)
    except (msgspec.DecodeError, RecursionError):
        plain = None
    if plain is not None:
        event_ids = [event_id for _, event_id in keys]
        if [result.event_id for result in plain.results] == event_ids:
            return _ok_results(event_ids)
    return match_results(keys, results_of(body), scrub)


def match_results(
    keys: Sequence[tuple[str | None, str]], results: Sequence[object], scrub: Callable[[object], str] = str
) -> list[EventResult]:
    """
    Pair Gravity's results with the events sent: by position when the keys line up, else by
    ``(event_name, event_id)`` when the results carry ``event_name``, else by ``event_id``.

    An event left without a result, or given two results that disagree, gets the status ``missing``
    (not known to be delivered). Results for events not sent, or without an ``event_id``, are ignored.
    The pipeline never puts two events with the same ``event_id`` in one request, so matching by
    ``event_id`` alone cannot swap two events' outcomes.
    """
    answers = [r for r in results if isinstance(r, dict)]
    if len(answers) == len(results) == len(keys) and _in_order(keys, answers):
        if _all_plain_ok(answers):
            return _ok_results([event_id for _, event_id in keys])
        return [_to_result(event_id, r, scrub) for (_, event_id), r in zip(keys, answers, strict=True)]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for raw in answers:
        event_id = _text(raw.get("event_id"))
        if event_id is not None:
            by_id.setdefault(event_id, []).append(raw)
    return [_matched(name, event_id, by_id.get(event_id, ()), scrub) for name, event_id in keys]


_status_of = methodcaller("get", "status")
_new_result = partial(tuple.__new__, EventResult)


def _all_plain_ok(answers: list[dict[str, Any]]) -> bool:
    """
    Whether every answer (each naming its event, as :func:`_in_order` found) is ``{"event_id": ..., "status": "ok"}``
    and nothing else: nearly every answer, checked in C.
    """
    count = len(answers)
    return list(map(len, answers)).count(2) == count and list(map(_status_of, answers)).count("ok") == count


def _ok_results(event_ids: list[str]) -> list[EventResult]:
    """``EventResult(event_id, "ok")`` of each event, built in C (a thousand results a request)."""
    return list(map(_new_result, zip(event_ids, repeat("ok"), repeat(None), repeat(None))))


def _in_order(keys: Sequence[tuple[str | None, str]], answers: list[dict[str, Any]]) -> bool:
    """Whether each answer names the event at its position: its ``event_id``, and its ``event_name`` if any."""
    # Nearly every answer: the ids as sent, in order, without event_name; compared as whole lists, in C.
    if [r.get("event_id") for r in answers] == [event_id for _, event_id in keys] and not any(
        "event_name" in r for r in answers
    ):
        return True
    return all(
        _text(r.get("event_id")) == event_id and _text(r.get("event_name"), name) == name
        for r, (name, event_id) in zip(answers, keys, strict=True)
    )


def _matched(
    event_name: str | None, event_id: str, answers: Sequence[dict[str, Any]], scrub: Callable[[object], str]
) -> EventResult:
    """Find the result of one event among the answers naming its id: those naming another event are left out."""
    mine = [raw for raw in answers if _text(raw.get("event_name"), event_name) == event_name]
    verdicts = {(str(raw.get("status")), str(raw.get("error")), str(raw.get("attributed"))) for raw in mine}
    if len(verdicts) != 1:  # none, or answers that disagree: neither can be trusted
        return EventResult(event_id, "missing", "no result returned" if not mine else "contradictory results")
    return _to_result(event_id, mine[0], scrub)


def _text(value: object, default: object = None) -> str | None:
    if value is None:
        return default  # type: ignore[return-value]
    return value if isinstance(value, str) else str(value)


def _to_result(event_id: str, raw: dict[str, Any], scrub: Callable[[object], str]) -> EventResult:
    status = raw.get("status")
    if status == "ok" and "error" not in raw:  # nearly every answer: nothing else to read
        attributed = raw.get("attributed")
        return EventResult(event_id, "ok", None, attributed if attributed is True or attributed is False else None)
    error = raw.get("error")
    attributed = raw.get("attributed")
    if isinstance(status, str):
        status = status.strip().lower()
    if not isinstance(status, str) or not status:
        status = "missing"
    elif status not in _KNOWN_STATUSES:
        status = scrub(status)
    return EventResult(
        event_id=event_id,
        status=status,
        error=None if error is None else scrub(error),
        attributed=attributed if isinstance(attributed, bool) else None,
    )


def server_message(answer: bytes | None, scrub: Callable[[object], str]) -> str:
    """
    Gravity's error message from an error answer: short, printable, and without the API key (``scrub`` is the
    client's :class:`~.secrets.KeyScrubber`). From a JSON
    object, its ``error``, ``message`` or ``detail``; from any other body (not JSON, too deep, another
    shape), the body's own text.
    """
    if answer is None:
        return "(an answer too large to read)"
    try:
        payload = decode_answer(answer)
    except GravityResponseError:
        payload = None
    if not isinstance(payload, dict):
        return scrub(answer.decode("utf-8", "replace"))
    message = payload.get("error") or payload.get("message") or payload.get("detail") or ""
    return scrub(message if isinstance(message, str) else json.dumps(message))
