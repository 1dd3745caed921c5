"""HTTP client for Gravity's Conversions API, free of Airflow so it can be used and tested on its own.

One :class:`GravityClient` owns one pooled :class:`requests.Session`. It sends at most 1,000 events per
request, retries what is worth retrying (429, 5xx, timeouts, dropped connections) with exponential
backoff and full jitter while honouring ``Retry-After``, and turns everything else into a typed error
that says what the caller should do next.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import msgspec
import requests
import urllib3
from requests.adapters import HTTPAdapter

from airflow_provider_gravity.conversions.buckets import DELIVERED_STATUSES
from airflow_provider_gravity.conversions.errors import (
    EventEncodingError,
    GravityAuthError,
    GravityHTTPError,
    GravityRedirectError,
    GravityRequestRejected,
    GravityResponseError,
    GravityUnavailableError,
)
from airflow_provider_gravity.conversions.events.encoded import EncodedEvent
from airflow_provider_gravity.version import __version__

log = logging.getLogger(__name__)

#: What :meth:`GravityClient.send_events` takes: events the pipeline encoded, or event dicts.
Event = EncodedEvent | Mapping[str, Any]
DEFAULT_BASE_URL = "https://api.trygravity.ai"
EVENTS_PATH = "/gateway/events"
MAX_EVENTS_PER_REQUEST = 1_000
_KNOWN_STATUSES = DELIVERED_STATUSES | {"error"}
#: 408 and 429, and every 5xx (including the 52x a CDN in front of Gravity answers).
RETRYABLE_STATUSES = frozenset({408, 429, *range(500, 600)})
BATCH_REJECTED_STATUSES = frozenset({400, 413, 422})
AUTH_STATUSES = frozenset({401, 403})
AUTH_HEADER_STYLES = ("bearer", "x-api-key")
_MESSAGE_LIMIT = 300
#: Characters of the key that, found together in a text, are scrubbed as if they were the key.
_KEY_STRETCH = 8
#: The longest way a character of a key form can be written in a text: JSON's ``\\uXXXX``.
_LONGEST_ESCAPE = 6
_JSON_BACKSLASHED = frozenset('/"\\')
_URL_SAFE_BASE64 = str.maketrans("+/", "-_")
#: The largest answer read: a result for 1,000 events is far smaller; a bigger body is not Gravity's answer.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: The deepest answer read: ``{"results": [{"error": {...}}]}`` is 4 levels; a deeper body is not Gravity's answer.
MAX_ANSWER_DEPTH = 32
_Scalar = str | int | float | bool | None
#: An answer of scalars in an object of results, decoded as the generic decoder would (1.3 ms for 1,000 results,
#: where the generic decoder and a walk to check the depth take 3).
_PLAIN_ANSWER = msgspec.json.Decoder(dict[str, list[dict[str, _Scalar]] | _Scalar])


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


@dataclass(frozen=True)
class RetryPolicy:
    """
    How long and how often to retry a request that failed for a transient reason.

    :param max_retries: retries after the first attempt; the request is tried ``max_retries + 1`` times.
    :param backoff_base: seconds; the n-th retry waits a random time in ``[0, backoff_base * 2**n]``.
    :param backoff_max: upper bound of one jittered wait, in seconds.
    :param retry_after_max: upper bound of a wait asked for by ``Retry-After``, in seconds.
    """

    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 120.0

    def delay(self, retry_number: int, retry_after: str | None) -> float:
        """Seconds to wait before retry number ``retry_number`` (0-based)."""
        asked = parse_retry_after(retry_after)
        if asked is not None:
            return min(asked, self.retry_after_max)
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**retry_number))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """
    Read a ``Retry-After`` header: delta seconds or an HTTP date.

    :return: seconds to wait (never negative), or ``None`` when absent or unreadable.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:  # a negative or non-finite delay is not one: fall back to the backoff
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` names this machine (``localhost``, 127.0.0.0/8 or ::1)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_base_url(base_url: str) -> str:
    """
    Check that a base URL is safe to send customer data to, and return it without a trailing slash.

    :raises ValueError: for a scheme other than https, or http to a host that is not loopback.
    """
    parts = urlsplit(base_url)
    if parts.scheme == "https" and parts.hostname:
        return base_url.rstrip("/")
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return base_url.rstrip("/")
    if parts.scheme == "http":
        raise ValueError(
            f"Refusing plain http:// to {parts.hostname!r}: customer data goes over https only "
            "(http is allowed for a loopback host such as the local sandbox)."
        )
    raise ValueError(f"Gravity base URL must be an https:// URL, got scheme {parts.scheme!r}.")


class GravityClient:
    """
    A thread-safe client of Gravity's Conversions API over one pooled HTTP session.

    :param base_url: API root, ``https://api.trygravity.ai`` by default; ``http://`` only for loopback.
    :param api_key: the advertiser API key. Never logged, never in an exception or ``repr``.
    :param auth_header: ``bearer`` (``Authorization: Bearer KEY``) or ``x-api-key`` (``X-API-Key: KEY``).
    :param timeout: read timeout of one request, in seconds.
    :param connect_timeout: connect timeout of one request, in seconds.
    :param retry: the :class:`RetryPolicy` for transient failures.
    :param pool_size: connections kept open; at least the number of requests sent in parallel.
    :param sleep: the function used to wait between retries (tests may record the waits).
    """

    def __init__(
        self,
        base_url: str | None,
        api_key: str,
        *,
        auth_header: str = "bearer",
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        pool_size: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise ValueError("A Gravity API key is required (the connection's password).")
        if not (api_key.isascii() and api_key.isprintable()) or any(c.isspace() for c in api_key):
            raise ValueError(
                "The Gravity API key holds characters an HTTP header cannot carry (spaces, line breaks, control or "
                "non-ASCII characters): check the connection's password."
            )
        if auth_header not in AUTH_HEADER_STYLES:
            raise ValueError(f"auth_header must be one of {AUTH_HEADER_STYLES}, got {auth_header!r}.")
        self.base_url = validate_base_url(base_url or DEFAULT_BASE_URL)
        self.events_url = self.base_url + EVENTS_PATH
        self.timeout = (connect_timeout, timeout)
        self.retry = retry or RetryPolicy()
        self.scrub = KeyScrubber(api_key)
        self._sleep = sleep
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.retries = 0
        self.session = requests.Session()
        adapter = _PoolKeyCachingAdapter(pool_connections=1, pool_maxsize=max(1, pool_size), max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers.update(
            {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": _user_agent()}
        )
        self.session.auth = _ApiKeyAuth(api_key, auth_header)
        _read_environment_once(self.session, self.events_url)

    def __repr__(self) -> str:
        return f"GravityClient(base_url={self.base_url!r}, api_key=***)"

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def send_events(self, events: Sequence[Event]) -> list[EventResult]:
        """
        Send one request with up to 1,000 events and return one result per event, in the events' order.

        :param events: encoded events (as the pipeline sends them), or JSON-ready event dicts, each with an
            ``event_id``.
        :raises ValueError: for an empty request or more than 1,000 events, before anything is sent.
        :raises GravityAuthError: on 401/403, at once.
        :raises GravityRequestRejected: on 400/413/422 for the whole request; split it to isolate bad events.
        :raises GravityUnavailableError: when transient failures outlast the retries.
        """
        if not events:
            raise ValueError("send_events needs at least one event.")
        if len(events) > MAX_EVENTS_PER_REQUEST:
            raise ValueError(f"Gravity accepts at most {MAX_EVENTS_PER_REQUEST} events per request; got {len(events)}.")
        body = self._post_with_retries(encode_body(events))
        return match_results([event_key(event) for event in events], _results_of(body), self.scrub)

    def check_connection(self) -> tuple[bool, str]:
        """
        Check the base URL and the API key without sending a conversion: an empty request is refused by
        Gravity after authentication, so 400/422 means the key was accepted.
        """
        try:
            response = self._post(b'{"data":[]}')
        except Exception as err:  # noqa: BLE001 - its text may quote the request's headers: name its type only
            return False, f"Could not reach {self.base_url}: {type(err).__name__}"
        response.close()
        if 300 <= response.status_code < 400:
            return False, str(GravityRedirectError(response.status_code, self.scrub(_location_host(response))))
        if response.status_code in AUTH_STATUSES:
            return False, f"Gravity refused the API key (HTTP {response.status_code})."
        if response.status_code < 300 or response.status_code in BATCH_REJECTED_STATUSES:
            return True, f"Connected to {self.base_url}; the API key was accepted."
        return False, f"Unexpected HTTP {response.status_code} from {self.events_url}."

    def _post(self, body: bytes) -> requests.Response:
        # Never follow a redirect: requests would carry the X-API-Key header to wherever it points.
        return self.session.post(self.events_url, data=body, timeout=self.timeout, allow_redirects=False, stream=True)

    def _post_with_retries(self, body: bytes) -> bytes:
        """POST ``body`` until Gravity answers 2xx (return the answer's body) or a typed error says stop."""
        attempts = self.retry.max_retries + 1
        last_problem = "no attempt made"
        last_status: int | None = None
        for attempt in range(1, attempts + 1):
            retry_after = None
            with self._lock:
                self.requests_sent += 1
            try:
                response = self._post(body)
                with response:
                    status = response.status_code
                    answer = _read_bounded(response, deadline=time.monotonic() + self.timeout[1])
            except requests.RequestException as err:  # timeouts, resets, malformed answers: worth another try
                last_status, last_problem = None, type(err).__name__
            else:
                if status < 300:
                    if answer is None:
                        raise GravityResponseError(f"not Gravity's answer: larger than {MAX_RESPONSE_BYTES:,} bytes")
                    return answer
                self._raise_for_final_status(status, response, answer)
                last_status, last_problem = status, f"HTTP {status}"
                retry_after = response.headers.get("Retry-After")
            if attempt == attempts:
                break
            wait = self.retry.delay(attempt - 1, retry_after)
            with self._lock:
                self.retries += 1
            log.warning(
                "Gravity request failed (%s), attempt %d of %d; retrying in %.2f s.",
                last_problem,
                attempt,
                attempts,
                wait,
            )
            self._sleep(wait)
        raise GravityUnavailableError(attempts, last_status, last_problem)

    def _raise_for_final_status(self, status: int, response: requests.Response, answer: bytes | None) -> None:
        """Raise the typed error of a non-2xx status that retrying cannot fix; return for a retryable one."""
        if status in RETRYABLE_STATUSES:
            return
        if 300 <= status < 400:
            raise GravityRedirectError(status, self.scrub(_location_host(response)))
        message = self._server_message(answer)
        if status in AUTH_STATUSES:
            raise GravityAuthError(status, message)
        if status in BATCH_REJECTED_STATUSES:
            raise GravityRequestRejected(status, message)
        raise GravityHTTPError(status, message)

    def _server_message(self, answer: bytes | None) -> str:
        """
        Gravity's error message from an error answer: short, printable, and without the API key. From a JSON
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
            return self.scrub(answer.decode("utf-8", "replace"))
        message = payload.get("error") or payload.get("message") or payload.get("detail") or ""
        return self.scrub(message if isinstance(message, str) else json.dumps(message))


class KeyScrubber:
    """
    Replaces the API key by ``***`` in any text that comes from Gravity (or from anything pretending to
    be it), in every form of :func:`key_forms` (the key, any 8-character stretch of it, its hex, its base64
    and url-safe base64 at each byte alignment), each in any letter case and with any of its characters
    percent-encoded or JSON-escaped. Texts are also cut to 300 printable characters, so an answer cannot
    flood the log or the delivery log.

    The key lives only in a closure, so neither ``vars()`` nor ``repr`` of this object shows it.

    :param api_key: the key to hide.
    """

    def __init__(self, api_key: str) -> None:
        forms = key_forms(api_key)
        folded = tuple(sorted({form.lower() for form in forms}, key=len, reverse=True))
        # Only the head of a text can reach the characters kept: a match covers at most `longest` characters and
        # leaves 3, so scrubbing this many gives the same first 300 as scrubbing the whole (16 MiB) text.
        longest = _LONGEST_ESCAPE * max(map(len, forms))
        window = longest * (_MESSAGE_LIMIT // 3 + 2)
        compiled: list[re.Pattern[str]] = []  # built on first need: most runs never get a text that needs it

        def pattern() -> re.Pattern[str]:
            if not compiled:
                patterns = sorted({_escaped_form_pattern(form) for form in forms}, key=len, reverse=True)
                compiled.append(re.compile("|".join(patterns), re.IGNORECASE))
            return compiled[0]

        def hide(text: str) -> str:
            text = text[:window]
            # In ASCII without % or \ a form can only be written as is, in some letter case: the pattern finds
            # nothing there unless a lower-cased form is in the lower-cased text (0.01 ms instead of 2).
            if text.isascii() and "%" not in text and "\\" not in text:
                lowered = text.lower()
                if not any(form in lowered for form in folded):
                    return text
            return pattern().sub("***", text)

        self._hide = hide

    def __call__(self, text: object) -> str:
        scrubbed = self._hide(str(text))  # the whole text first: cutting first could leave part of a key
        printable = "".join(c if c.isprintable() else " " for c in scrubbed[:_MESSAGE_LIMIT])
        return self._hide(printable)

    def __repr__(self) -> str:
        return "KeyScrubber(***)"


def key_forms(api_key: str) -> set[str]:
    """
    The texts :class:`KeyScrubber` hides: the key; each stretch of 8 of its characters (a server that knows
    the key may echo part of it: enough to guess the rest); its UTF-8 bytes in hex; and its base64 and url-safe
    base64 at each of the three places it can start in a 3-byte group (:func:`base64_core`), which covers the
    key base64-encoded after any prefix (``base64("t=" + KEY)``, ``Basic`` credentials), padded or not.
    """
    raw = api_key.encode()
    forms = {api_key, raw.hex()}
    stretch = min(len(api_key), _KEY_STRETCH)
    forms.update(api_key[start : start + stretch] for start in range(len(api_key) - stretch + 1))
    for offset in range(3):
        core = base64_core(raw, offset)
        forms.update({core, core.translate(_URL_SAFE_BASE64)})
    return {form for form in forms if form}


def base64_core(raw: bytes, offset: int) -> str:
    """
    The base64 characters that encode ``raw`` and nothing else when it starts ``offset`` bytes (0, 1 or 2)
    into a 3-byte group: they are the same whatever bytes come before and after it, and whether the text is
    padded or not. (A character holds 6 bits; one that holds a bit of the bytes around ``raw`` is left out.)
    """
    encoded = base64.b64encode(bytes(offset) + raw).decode()
    first = -(-8 * offset // 6)  # the first character whose 6 bits all belong to raw
    end = 8 * (offset + len(raw)) // 6  # one past the last such character
    return encoded[first:end]


def _escaped_form_pattern(form: str) -> str:
    """
    A pattern of ``form`` in which each character may also appear, in either letter case, percent-encoded
    (whatever characters the encoder kept), JSON-escaped (``\\uXXXX``, ``\\/``, ``\\"``, ``\\\\``), or as
    ``+`` for a space.
    """
    parts = []
    for character in form:
        forms = {re.escape(character)}
        for spelling in {character, character.lower(), character.upper()}:  # escaped in any letter case too
            forms.update(re.escape(f"%{byte:02X}") for byte in spelling.encode("utf-8", "surrogatepass"))
            forms.add(re.escape(f"\\u{ord(spelling):04x}"))
        if character in _JSON_BACKSLASHED:
            forms.add(re.escape(f"\\{character}"))
        if character == " ":
            forms.add(re.escape("+"))
        parts.append(f"(?:{'|'.join(sorted(forms, key=len, reverse=True))})")
    return "".join(parts)


class _ApiKeyAuth(requests.auth.AuthBase):
    """Adds the API key to each request; only a closure holds it, so no header dict, ``vars()`` or ``repr`` does."""

    def __init__(self, api_key: str, style: str) -> None:
        name, value = ("Authorization", f"Bearer {api_key}") if style == "bearer" else ("X-API-Key", api_key)

        def sign(request: requests.PreparedRequest) -> requests.PreparedRequest:
            request.headers[name] = value
            return request

        self._sign = sign
        self._name = name

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return self._sign(request)

    def __repr__(self) -> str:
        return f"_ApiKeyAuth({self._name}: ***)"


def _read_bounded(response: requests.Response, *, deadline: float) -> bytes | None:
    """
    The answer's body, or ``None`` when it is larger than :data:`MAX_RESPONSE_BYTES` (then not read further).

    :raises requests.Timeout: when the body takes longer than the read timeout in all: a server that drips
        one byte at a time would otherwise hold the request forever.
    """
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        return None
    body = bytearray()
    raw = response.raw
    try:
        while piece := raw.read1(65_536, decode_content=True):  # whatever has arrived: the deadline is checked
            body += piece
            if len(body) > MAX_RESPONSE_BYTES:
                return None
            if time.monotonic() > deadline:
                raise requests.Timeout("the answer took longer than the read timeout to arrive")
    except urllib3.exceptions.ReadTimeoutError as error:
        raise requests.Timeout(type(error).__name__) from None
    except urllib3.exceptions.HTTPError as error:  # a reset or truncated answer, as requests would report it
        raise requests.ConnectionError(type(error).__name__) from None
    return bytes(body)


def _location_host(response: requests.Response) -> str:
    location = response.headers.get("Location") or ""
    try:
        return urlsplit(location).hostname or "(none given)"
    except ValueError:
        return "(unreadable)"


def encode_body(events: Sequence[Event]) -> bytes:
    """
    The request body ``{"data": [...]}`` as JSON bytes: encoded events are joined as they are, event dicts
    are written with msgspec.

    :raises EventEncodingError: for an event JSON cannot carry (text that is not valid Unicode).
    """
    try:
        encoded = [event.json for event in events if isinstance(event, EncodedEvent)]
        if len(encoded) == len(events):  # what the pipeline sends: one join, one encode
            return ('{"data":[' + ",".join(encoded) + "]}").encode("ascii")
        texts = [
            event.json.encode("ascii") if isinstance(event, EncodedEvent) else msgspec.json.encode(event)
            for event in events
        ]
    except (UnicodeError, msgspec.EncodeError, OverflowError, TypeError) as error:
        raise EventEncodingError(f"An event cannot be written as JSON ({type(error).__name__}).") from None
    return b'{"data":[' + b",".join(texts) + b"]}"


def event_key(event: Event) -> tuple[str | None, str]:
    """An event's ``(event_name, event_id)``, as Gravity's results name it."""
    if isinstance(event, EncodedEvent):
        return event.event_name, event.event_id
    return event.get("event_name"), str(event.get("event_id"))


def decode_answer(body: bytes) -> Any:
    """
    An answer's JSON, whatever the body: every way it can fail to be JSON Gravity could have sent is one error.

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


def _results_of(body: bytes) -> list[Any]:
    payload = decode_answer(body)
    results = payload.get("results") if isinstance(payload, dict) else None
    if not isinstance(results, list):
        raise GravityResponseError("not Gravity's answer: no 'results' list")
    return results


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
        return [_to_result(event_id, r, scrub) for (_, event_id), r in zip(keys, answers, strict=True)]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for raw in answers:
        event_id = _text(raw.get("event_id"))
        if event_id is not None:
            by_id.setdefault(event_id, []).append(raw)
    return [_matched(name, event_id, by_id.get(event_id, ()), scrub) for name, event_id in keys]


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
    """The result of one event among the answers naming its id: those naming another event are left out."""
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


class _PoolKeyCachingAdapter(HTTPAdapter):
    """
    requests' adapter, remembering each origin's connection-pool key: requests works it out again for every
    request, a ``stat`` of the CA bundle included, which on a busy interpreter waits for the GIL once more.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool_keys: dict[Any, tuple[dict[str, Any], dict[str, Any]]] = {}

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The pool key of ``request``'s origin with these TLS settings, worked out once (see requests)."""
        origin = urlsplit(request.url or "")[:2]
        key = (origin, verify, cert)
        known = self._pool_keys.get(key)
        if known is None:
            known = self._pool_keys[key] = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params, pool_kwargs = known
        return dict(host_params), dict(pool_kwargs)


def _read_environment_once(session: requests.Session, url: str) -> None:
    """
    Give ``session`` what requests would read from the environment for ``url`` (``HTTPS_PROXY`` and the other
    proxy variables with ``NO_PROXY``, ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``), read now, once.

    requests reads them again for every request, scanning the whole environment twice (about 150 us of CPU a
    request); a client sends to one URL for its whole life. The session has its own auth, so requests would
    never take ``.netrc`` credentials for it.
    """
    session.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False


def _user_agent() -> str:
    return f"airflow-provider-gravity/{__version__}"
