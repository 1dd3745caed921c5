"""Typed errors of the Gravity client: each tells the caller what to do next."""

from __future__ import annotations


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
