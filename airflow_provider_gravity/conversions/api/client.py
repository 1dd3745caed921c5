"""
Gravity's Conversions API client: :class:`GravityClient`, composing the transport, the key's guards and the wire.

Free of Airflow, so it can be used and tested on its own. It sends at most 1,000 events per request, retries what is
worth retrying (429, 5xx, timeouts, dropped connections) with exponential backoff and full jitter while honouring
``Retry-After``, and turns everything else into a typed error that says what the caller should do next. The layers:

::

    transport   the HTTP I/O: pooled sessions (one per sending thread), retries, bounded reads, no redirects
    secrets     the API key's guards: the scrubber of every text from Gravity, and the auth that adds the key
    wire        the request body from encoded events, and Gravity's answer as one result per event
    client      this module: the base URL, the statuses that mean stop, and the typed errors they raise
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter

from airflow_provider_gravity.conversions.api.endpoint import DEFAULT_BASE_URL
from airflow_provider_gravity.conversions.api.secrets import AUTH_HEADER_STYLES, ApiKeyAuth, KeyScrubber, check_api_key
from airflow_provider_gravity.conversions.api.transport import (
    MAX_RESPONSE_BYTES,
    Answer,
    RetryPolicy,
    Transport,
    location_host,
    pooled_session,
)
from airflow_provider_gravity.conversions.api.wire import (
    MAX_EVENTS_PER_REQUEST,
    Event,
    EventResult,
    answer_results,
    encode_body,
    event_keys,
    server_message,
)
from airflow_provider_gravity.conversions.errors import (
    GravityAuthError,
    GravityError,
    GravityHTTPError,
    GravityRedirectError,
    GravityRequestRejected,
    GravityResponseError,
)
from airflow_provider_gravity.version import __version__

#: The client and what its signature names, for the hook and the operator; the layers' other names live in them.
__all__ = [
    "AUTH_HEADER_STYLES",
    "DEFAULT_BASE_URL",
    "MAX_EVENTS_PER_REQUEST",
    "EventResult",
    "GravityClient",
    "RetryPolicy",
    "is_loopback_host",
    "validate_base_url",
]

EVENTS_PATH = "/gateway/events"
BATCH_REJECTED_STATUSES = frozenset({400, 413, 422})
AUTH_STATUSES = frozenset({401, 403})


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
    A thread-safe client of Gravity's Conversions API over one pool of HTTP connections.

    :param base_url: API root, ``https://api.trygravity.ai`` by default; ``http://`` only for loopback.
    :param api_key: the advertiser API key. Never logged, never in an exception or ``repr``.
    :param auth_header: ``bearer`` (``Authorization: Bearer KEY``) or ``x-api-key`` (``X-API-Key: KEY``).
    :param timeout: read timeout of one request, in seconds.
    :param connect_timeout: connect timeout of one request, in seconds.
    :param retry: the :class:`RetryPolicy` for transient failures.
    :param pool_size: connections kept open; at least the number of requests sent in parallel.
    :param sleep: the function used to wait between retries (tests may record the waits).
    :param session: the :class:`requests.Session` to send through instead of a new one; its adapters are used as
        mounted (unless ``adapter`` is given), and it gets the client's headers, auth and environment settings. Each
        sending thread posts through a copy of it that shares its adapters (see :class:`~.transport.Transport`).
    :param adapter: the transport adapter (a :class:`requests.adapters.BaseAdapter`) to mount for ``https://`` and
        ``http://`` instead of the pooling one, for instance one that answers in memory in a test. It is shared by
        every sending thread, so it must be thread-safe.
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
        session: requests.Session | None = None,
        adapter: BaseAdapter | None = None,
    ) -> None:
        check_api_key(api_key)
        if auth_header not in AUTH_HEADER_STYLES:
            raise ValueError(f"auth_header must be one of {AUTH_HEADER_STYLES}, got {auth_header!r}.")
        self.base_url = validate_base_url(base_url or DEFAULT_BASE_URL)
        self.events_url = self.base_url + EVENTS_PATH
        self.timeout = (connect_timeout, timeout)
        self.retry = retry or RetryPolicy()
        self.scrub = KeyScrubber(api_key)
        session = pooled_session(
            self.events_url,
            auth=ApiKeyAuth(api_key, auth_header),
            headers={"Content-Type": "application/json", "Accept": "application/json", "User-Agent": _user_agent()},
            pool_size=pool_size,
            session=session,
            adapter=adapter,
        )
        self.transport = Transport(
            self.events_url, session=session, timeout=self.timeout, retry=self.retry, sleep=sleep
        )

    def __repr__(self) -> str:
        return f"GravityClient(base_url={self.base_url!r}, api_key=***)"

    @property
    def session(self) -> requests.Session:
        """The session whose settings and adapters every sending thread's session takes (mount an adapter here)."""
        return self.transport.session

    @property
    def requests_sent(self) -> int:
        """Requests sent by :meth:`send_events`, each retry included, from every thread."""
        return self.transport.requests_sent

    @property
    def retries(self) -> int:
        """Retries of :meth:`send_events`' requests, from every thread."""
        return self.transport.retries

    def close(self) -> None:
        """Close the pooled connections."""
        self.transport.close()

    def send_events(self, events: Sequence[Event]) -> list[EventResult]:
        """
        Send one request with up to 1,000 events and return one result per event, in the events' order.

        :param events: encoded events (an :class:`~..encoded_event.EncodedEvents` batch, as the pipeline sends
            them), or JSON-ready event dicts, each with an ``event_id``.
        :raises ValueError: for an empty request or more than 1,000 events, before anything is sent.
        :raises GravityAuthError: on 401/403, at once.
        :raises GravityRequestRejected: on 400/413/422 for the whole request; split it to isolate bad events.
        :raises GravityUnavailableError: when transient failures outlast the retries.
        """
        if not events:
            raise ValueError("send_events needs at least one event.")
        if len(events) > MAX_EVENTS_PER_REQUEST:
            raise ValueError(f"Gravity accepts at most {MAX_EVENTS_PER_REQUEST} events per request; got {len(events)}.")
        body = self._answer_body(encode_body(events))
        return answer_results(body, event_keys(events), self.scrub)

    def check_connection(self) -> tuple[bool, str]:
        """
        Check the base URL and the API key without sending a conversion: an empty request is refused by
        Gravity after authentication, so 400/422 means the key was accepted.
        """
        try:
            response = self.transport.post(b'{"data":[]}')
        except Exception as err:  # noqa: BLE001 - its text may quote the request's headers: name its type only
            return False, f"Could not reach {self.base_url}: {type(err).__name__}"
        response.close()
        if 300 <= response.status_code < 400:
            return False, str(GravityRedirectError(response.status_code, self.scrub(location_host(response.headers))))
        if response.status_code in AUTH_STATUSES:
            return False, f"Gravity refused the API key (HTTP {response.status_code})."
        if response.status_code < 300 or response.status_code in BATCH_REJECTED_STATUSES:
            return True, f"Connected to {self.base_url}; the API key was accepted."
        return False, f"Unexpected HTTP {response.status_code} from {self.events_url}."

    def _answer_body(self, body: bytes) -> bytes:
        """POST ``body``, retried as the policy says, and return Gravity's 2xx answer; any other raises its error."""
        answer = self.transport.send(body)
        if answer.status >= 300:
            raise self._final_error(answer)
        if answer.body is None:
            raise GravityResponseError(f"not Gravity's answer: larger than {MAX_RESPONSE_BYTES:,} bytes")
        return answer.body

    def _final_error(self, answer: Answer) -> GravityError:
        """Build the typed error of a non-2xx answer that retrying cannot fix; its texts scrubbed of the key."""
        status = answer.status
        if 300 <= status < 400:
            return GravityRedirectError(status, self.scrub(location_host(answer.headers)))
        message = server_message(answer.body, self.scrub)
        if status in AUTH_STATUSES:
            return GravityAuthError(status, message)
        if status in BATCH_REJECTED_STATUSES:
            return GravityRequestRejected(status, message)
        return GravityHTTPError(status, message)


def _user_agent() -> str:
    return f"airflow-provider-gravity/{__version__}"
