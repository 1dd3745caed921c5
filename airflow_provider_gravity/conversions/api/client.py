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
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
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
from airflow_provider_gravity.conversions.events.encode import EncodedEvent
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
#: The largest answer read: a result for 1,000 events is far smaller; a bigger body is not Gravity's answer.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class EventResult:
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
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size), max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers.update(
            {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": _user_agent()}
        )
        self.session.auth = _ApiKeyAuth(api_key, auth_header)

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
                        raise GravityResponseError(f"Gravity's answer is larger than {MAX_RESPONSE_BYTES:,} bytes.")
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
        """Gravity's error message from an error answer: short, printable, and without the API key."""
        if answer is None:
            return "(an answer too large to read)"
        try:
            payload = msgspec.json.decode(answer)
            message = payload.get("error") or payload.get("message") or payload.get("detail") or ""
            if not isinstance(message, str):
                message = json.dumps(message)
        except (msgspec.DecodeError, AttributeError, TypeError):
            message = answer.decode("utf-8", "replace")
        return self.scrub(message)


class KeyScrubber:
    """
    Replaces the API key by ``***`` in any text that comes from Gravity (or from anything pretending to
    be it): in any letter case, and URL-, base64- or JSON-escaped. Texts are also cut to 300 printable
    characters, so an answer cannot flood the log or the delivery log.

    The key lives only in a closure, so neither ``vars()`` nor ``repr`` of this object shows it.

    :param api_key: the key to hide.
    """

    def __init__(self, api_key: str) -> None:
        forms = [_escaped_form_pattern(api_key)]
        for text in (api_key, f"Bearer {api_key}", f":{api_key}"):
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                forms.append(re.escape(encode(text.encode()).decode().rstrip("=")))
        # A server that knows the key may echo part of it: any stretch of it long enough to guess the rest.
        stretch = min(len(api_key), _KEY_STRETCH)
        forms += [re.escape(api_key[start : start + stretch]) for start in range(len(api_key) - stretch + 1)]
        pattern = re.compile("|".join(sorted(set(forms), key=len, reverse=True)), re.IGNORECASE)

        def hide(text: str) -> str:
            return pattern.sub("***", text)

        self._hide = hide

    def __call__(self, text: object) -> str:
        scrubbed = self._hide(str(text))  # the whole text first: cutting first could leave part of a key
        printable = "".join(c if c.isprintable() else " " for c in scrubbed[:_MESSAGE_LIMIT])
        return self._hide(printable)

    def __repr__(self) -> str:
        return "KeyScrubber(***)"


def _escaped_form_pattern(api_key: str) -> str:
    """
    A pattern of the key in which each character may also appear percent-encoded (whatever characters the
    encoder kept), JSON-escaped, or as ``+`` for a space.
    """
    parts = []
    for character in api_key:
        forms = {re.escape(character)}
        forms.update(re.escape(f"%{byte:02X}") for byte in character.encode("utf-8", "surrogatepass"))
        forms.add(re.escape(f"\\u{ord(character):04x}"))
        if character == "/":
            forms.add(re.escape("\\/"))
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


def _results_of(body: bytes) -> list[Any]:
    try:
        results = msgspec.json.decode(body)["results"]
    except (msgspec.DecodeError, KeyError, TypeError, IndexError) as err:
        raise GravityResponseError("Gravity's answer has no 'results' list.") from err
    if not isinstance(results, list):
        raise GravityResponseError("Gravity's 'results' is not a list.")
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
    if len(answers) == len(results) == len(keys) and all(
        _text(r.get("event_id")) == event_id and _text(r.get("event_name"), name) == name
        for r, (name, event_id) in zip(answers, keys, strict=True)
    ):
        return [_to_result(event_id, r, scrub) for (_, event_id), r in zip(keys, answers, strict=True)]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for raw in answers:
        event_id = _text(raw.get("event_id"))
        if event_id is not None:
            by_id.setdefault(event_id, []).append(raw)
    return [_matched(name, event_id, by_id.get(event_id, ()), scrub) for name, event_id in keys]


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
    if status == "ok" and "error" not in raw and "attributed" not in raw:  # nearly every answer: nothing to read
        return EventResult(event_id, "ok")
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


def _user_agent() -> str:
    return f"airflow-provider-gravity/{__version__}"
