"""
Every error of the provider's core, in one tree: each tells the caller what to do next.

::

    ColumnContractError                the query's columns break the column contract: fix the query
    GravityError
    ├── GravityHTTPError               an HTTP status retrying cannot fix: fail the task
    │   ├── GravityAuthError           401/403: the key is wrong
    │   ├── GravityRedirectError       3xx: the base URL is wrong; redirects are never followed
    │   └── GravityRequestRejected     400/413/422: split the batch to isolate the bad events
    ├── GravityResponseError           2xx whose body is not the documented answer: retry the task
    ├── GravityUnavailableError        408/429/5xx/timeouts outlasted the retries: retry the task
    └── EventEncodingError             an event cannot be written as JSON: nothing was sent; isolate it
"""

from __future__ import annotations


class ColumnContractError(ValueError):
    """The query's columns do not follow the column contract; raised before anything is sent."""


class GravityError(Exception):
    """Base class of every error raised by the Gravity client."""


class GravityHTTPError(GravityError):
    """
    Gravity answered with an HTTP status that retrying cannot fix.

    :param status: the HTTP status code.
    :param message: Gravity's error message, truncated, with the API key scrubbed.
    """

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"Gravity answered HTTP {status}: {message or '(no message)'}")


class GravityAuthError(GravityHTTPError):
    """401/403: the API key is missing, wrong or revoked. Retrying will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.args = (
            f"Gravity refused the API key (HTTP {status}): {message or '(no message)'}. "
            "Check the password of the Gravity connection.",
        )


class GravityRedirectError(GravityHTTPError):
    """
    3xx: Gravity, or something in front of it, redirected the request. It is not followed, because the API
    key would travel with it to a host nobody configured.

    :param location_host: the host the redirect pointed to, or ``None`` when the answer named none.
    """

    def __init__(self, status: int, location_host: str | None) -> None:
        super().__init__(status, "")
        self.location_host = location_host
        self.args = (
            f"Gravity answered HTTP {status}, a redirect to host {location_host or '(none given)'!r}. Redirects "
            "are never followed (the API key would go with them): set the Gravity connection's host to the "
            "API's own address.",
        )


class GravityRequestRejected(GravityHTTPError):
    """400/413/422 for a whole request: do not resend it as is; split it to isolate the bad events."""


class GravityResponseError(GravityError):
    """Gravity answered 2xx with a body that is not the documented ``{"results": [...]}``."""


class GravityUnavailableError(GravityError):
    """
    Transient failures (429, 5xx, timeouts, dropped connections) outlasted the retries.

    :param attempts: how many times the request was tried.
    :param last_status: the last HTTP status, or ``None`` when the last attempt got no answer.
    :param last_problem: a short description of the last failure.
    """

    def __init__(self, attempts: int, last_status: int | None, last_problem: str) -> None:
        self.attempts = attempts
        self.last_status = last_status
        self.last_problem = last_problem
        super().__init__(f"Gravity did not accept the request after {attempts} attempts; last: {last_problem}.")


class EventEncodingError(GravityError, ValueError):
    """An event holds a value JSON cannot carry (text that is not valid Unicode); nothing was sent."""
