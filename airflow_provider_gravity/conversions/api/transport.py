"""
The client's HTTP I/O: pooled sessions, one per sending thread, retries with jittered backoff, bounded reads.

Redirects are never followed. A :class:`Transport` knows one URL and the statuses worth another try; what any other
answer means is the client's to say.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import BaseAdapter, HTTPAdapter

from airflow_provider_gravity.conversions.backoff import full_jitter
from airflow_provider_gravity.conversions.errors import GravityUnavailableError

log = logging.getLogger(__name__)

#: 408 and 429, and every 5xx (including the 52x a CDN in front of Gravity answers).
RETRYABLE_STATUSES = frozenset({408, 429, *range(500, 600)})
#: The largest answer read: a result for 1,000 events is far smaller; a bigger body is not Gravity's answer.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


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
        return full_jitter(retry_number, self.backoff_base, self.backoff_max)


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


class Answer(NamedTuple):
    """
    One HTTP answer, read.

    :param status: the HTTP status.
    :param headers: the answer's headers (``Retry-After``, ``Location``).
    :param body: the body, or ``None`` when it is larger than :data:`MAX_RESPONSE_BYTES` (then not read further).
    """

    status: int
    headers: Mapping[str, str]
    body: bytes | None


def pooled_session(
    url: str,
    *,
    auth: requests.auth.AuthBase,
    headers: Mapping[str, str],
    pool_size: int,
    session: requests.Session | None = None,
    adapter: BaseAdapter | None = None,
) -> requests.Session:
    """
    Return the session every request to ``url`` goes through, ready: ``headers`` and ``auth`` set, and what requests
    would read from the environment for ``url`` read now, once (:func:`_read_environment_once`).

    :param session: the session to configure; a new one by default, with a :class:`_PoolKeyCachingAdapter` of
        ``pool_size`` connections mounted for ``https://`` and ``http://``. A given session keeps the adapters
        mounted on it, unless ``adapter`` is given too.
    :param adapter: the transport adapter to mount for ``https://`` and ``http://`` instead.
    """
    if session is None:
        session = requests.Session()
        if adapter is None:
            adapter = _PoolKeyCachingAdapter(pool_connections=1, pool_maxsize=max(1, pool_size), max_retries=0)
    if adapter is not None:
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    session.headers.update(headers)
    session.auth = auth
    _read_environment_once(session, url)
    return session


class Transport:
    """
    POSTs request bodies to one URL, retries what failed for a transient reason, and reads each answer within bounds.

    requests does not document a :class:`requests.Session` as thread-safe, and its maintainers advise one session per
    thread (psf/requests#1871, #2766): a session's cookie jar is written by every answer that sets a cookie (a CDN in
    front of Gravity may) and read while every request is prepared. The pipeline sends batches from several threads
    at once, so each sending thread posts through a session of its own (:func:`_thread_session`), with its own
    headers and cookie jar, made the first time the thread sends. The adapters are shared on purpose, so that the
    threads draw on one pool of connections as before: an adapter's state is urllib3's pool manager, which locks its
    pools, a connection pool, which hands out connections from a queue (urllib3: "thread-safe connection pool"), and
    the pool-key cache of :class:`_PoolKeyCachingAdapter`, which every thread fills with the same value for a key.

    :param url: where every body is posted.
    :param session: the session whose settings and adapters each thread's session takes, and that the thread that
        made the transport posts through. An adapter mounted on it later serves every thread.
    :param timeout: ``(connect, read)`` seconds of one request; the read timeout also bounds reading a whole answer.
    :param retry: the :class:`RetryPolicy` for transient failures.
    :param sleep: the function used to wait between retries.
    """

    def __init__(
        self,
        url: str,
        *,
        session: requests.Session,
        timeout: tuple[float, float],
        retry: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.session = session
        self.timeout = timeout
        self.retry = retry
        self._sleep = sleep
        self._lock = threading.Lock()
        self._local = threading.local()
        self._local.session = session
        self.requests_sent = 0
        self.retries = 0

    def __repr__(self) -> str:
        return f"Transport(url={self.url!r})"

    def close(self) -> None:
        """Close the pooled connections (those of every thread: the threads' sessions share the adapters)."""
        self.session.close()

    def post(self, body: bytes) -> requests.Response:
        """POST ``body`` once, through this thread's session; the answer is not read yet: close it."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = _thread_session(self.session)
        # Never follow a redirect: requests would carry the X-API-Key header to wherever it points.
        return session.post(self.url, data=body, timeout=self.timeout, allow_redirects=False, stream=True)

    def send(self, body: bytes) -> Answer:
        """
        POST ``body`` until an answer another try cannot change: a 2xx, or a status not in :data:`RETRYABLE_STATUSES`
        (a redirect among them: it is returned, never followed).

        :raises GravityUnavailableError: when transient failures (retryable statuses, timeouts, dropped connections,
            malformed answers) outlast the retries.
        """
        attempts = self.retry.max_retries + 1
        last_problem = "no attempt made"
        last_status: int | None = None
        for attempt in range(1, attempts + 1):
            retry_after = None
            with self._lock:
                self.requests_sent += 1
            try:
                answer = self._read(body)
            except requests.RequestException as err:  # timeouts, resets, malformed answers: worth another try
                last_status, last_problem = None, type(err).__name__
            else:
                if answer.status not in RETRYABLE_STATUSES:
                    return answer
                last_status, last_problem = answer.status, f"HTTP {answer.status}"
                retry_after = answer.headers.get("Retry-After")
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

    def _read(self, body: bytes) -> Answer:
        """POST ``body`` once and read the answer, within :data:`MAX_RESPONSE_BYTES` and the read timeout."""
        response = self.post(body)
        with response:
            deadline = time.monotonic() + self.timeout[1]
            return Answer(response.status_code, response.headers, _read_bounded(response, deadline=deadline))


def _thread_session(template: requests.Session) -> requests.Session:
    """
    Build a session for one more sending thread: of ``template``'s class (an injected subclass keeps its own code
    and attributes), with ``template``'s settings, a copy of its headers, cookies, proxies, hooks and params, and its
    adapter mapping itself (one pool of connections for every thread; see :class:`Transport`).
    """
    session = type(template).__new__(type(template))
    session.__dict__.update(template.__dict__)
    session.headers = template.headers.copy()
    session.cookies = template.cookies.copy()
    session.proxies = dict(template.proxies)
    session.hooks = {event: list(hooks) for event, hooks in template.hooks.items()}
    session.params = dict(template.params)
    session.adapters = template.adapters
    return session


def location_host(headers: Mapping[str, str]) -> str:
    """Return the host a redirect points to (its ``Location`` header), for the error that names it."""
    location = headers.get("Location") or ""
    try:
        return urlsplit(location).hostname or "(none given)"
    except ValueError:
        return "(unreadable)"


def _read_bounded(response: requests.Response, *, deadline: float) -> bytes | None:
    """
    Read the answer's body, or ``None`` when it is larger than :data:`MAX_RESPONSE_BYTES` (then not read further).

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
        """Return the pool key of ``request``'s origin with these TLS settings, worked out once (see requests)."""
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
