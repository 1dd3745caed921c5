"""One retry for writes that lost a lock conflict: deadlocks, serialization failures, lock waits, with jitter."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from airflow_provider_gravity.conversions.backoff import full_jitter

TRANSIENT_ERROR_ATTEMPTS = 5
# PostgreSQL serialization failure / deadlock; MySQL lock wait timeout / deadlock.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})
_TRANSIENT_MYSQL_ERRNOS = frozenset({1205, 1213})

_T = TypeVar("_T")


def retry_transient(operation: Callable[[], _T], *, subject: str, logger: logging.Logger) -> _T:
    """
    Run ``operation`` (a whole transaction), again after a deadlock, a serialization failure or a lock wait,
    at most :data:`TRANSIENT_ERROR_ATTEMPTS` times in all; any other error is raised at once.

    :param operation: the transaction; it must be safe to run again after it rolled back.
    :param subject: whose write it is in the log (``"Delivery log"``).
    :param logger: the writer's logger, which tells each retry.
    """
    for attempt in range(1, TRANSIENT_ERROR_ATTEMPTS + 1):
        try:
            return operation()
        except DBAPIError as error:
            if attempt == TRANSIENT_ERROR_ATTEMPTS or not is_transient(error):
                raise
            logger.info(
                "%s write hit a lock conflict (%s); retry %d of %d.",
                subject,
                type(error.orig).__name__,
                attempt,
                TRANSIENT_ERROR_ATTEMPTS - 1,
            )
            pause(attempt)
    raise AssertionError("unreachable")


def is_transient(error: DBAPIError) -> bool:
    """Whether the error is a lock conflict that the same transaction run again may not meet."""
    original = error.orig
    sqlstate = getattr(original, "pgcode", None) or getattr(original, "sqlstate", None)
    if sqlstate in _TRANSIENT_SQLSTATES:
        return True
    arguments = getattr(original, "args", ())
    if arguments and arguments[0] in _TRANSIENT_MYSQL_ERRNOS:
        return True
    message = str(original).lower()
    return "database is locked" in message or "deadlock" in message


def pause(attempt: int) -> None:
    """Sleep with exponential backoff and full jitter, so colliding writers spread out."""
    time.sleep(full_jitter(attempt, 0.05))
