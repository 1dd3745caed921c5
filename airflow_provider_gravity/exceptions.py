"""
The exceptions the operator raises, one per answer to "will a retry of the task help?".

::

    AirflowException
    ├── GravityRunIncomplete     events are left undelivered (Gravity unavailable, results missing): retry
    └── AirflowFailException
        └── GravityRunRefused    only a change can fix it (key, base URL, query, error rate): no retry

The client's own errors (:mod:`airflow_provider_gravity.conversions.errors`) say what went wrong with one
request; these say what the task's failure means for the next try.
"""

from __future__ import annotations

try:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # Airflow 3.1, whose task SDK does not re-export them yet
    from airflow.exceptions import AirflowException, AirflowFailException  # type: ignore[no-redef]


class GravityRunIncomplete(AirflowException):
    """Some events are not known to be delivered; a retry of the task sends only those."""


class GravityRunRefused(AirflowFailException):
    """The run cannot succeed as configured; the task fails without retries."""


__all__ = ["AirflowException", "AirflowFailException", "GravityRunIncomplete", "GravityRunRefused"]
