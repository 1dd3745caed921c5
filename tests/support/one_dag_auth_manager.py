"""SimpleAuthManager with users limited to one DAG, for the Gravity view's tests of who sees what.

SimpleAuthManager gives a role access to every DAG or to none. This subclass reads
``GRAVITY_TEST_DAG_LIMITS`` (``user:dag_id,user2:dag_id2``): a user named there may read that DAG only (its runs,
its task instances), nothing else of any DAG, and is a SimpleAuthManager user in every other respect. Set it as
``[core] auth_manager = tests.support.one_dag_auth_manager.OneDagAuthManager``.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

LIMITS_VARIABLE = "GRAVITY_TEST_DAG_LIMITS"


def dag_limits() -> dict[str, str]:
    """``{username: the one DAG they may read}`` from ``GRAVITY_TEST_DAG_LIMITS``."""
    pairs = (item.split(":", 1) for item in os.environ.get(LIMITS_VARIABLE, "").split(",") if ":" in item)
    return {user.strip(): dag_id.strip() for user, dag_id in pairs}


class OneDagAuthManager(SimpleAuthManager):
    """A SimpleAuthManager whose users of ``GRAVITY_TEST_DAG_LIMITS`` may read one DAG each."""

    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        allowed = dag_limits().get(user.get_name())
        if allowed is None:
            return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
        return method == "GET" and details is not None and details.id == allowed
