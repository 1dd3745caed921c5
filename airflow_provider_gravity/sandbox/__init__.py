"""
A strict local Gravity Conversions API for DAG development, tests, demos and benchmarks.

Run it with ``python -m airflow_provider_gravity.sandbox --api-key KEY`` (see ``--help``), or
build the app in-process with :func:`create_app`. It is written from the API contract alone
and imports nothing from the client side of this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_gravity.sandbox.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use so that the validation core and ``--help`` do not load FastAPI.
    if name == "create_app":
        from airflow_provider_gravity.sandbox.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
