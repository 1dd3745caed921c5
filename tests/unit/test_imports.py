"""What importing the provider's light parts loads: the hook and the client never load pandas."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "airflow_provider_gravity.conversions.api.client",
        "airflow_provider_gravity.hooks.gravity",
        "airflow_provider_gravity.conversions",
        "airflow_provider_gravity",
    ],
)
def test_importing_the_hook_or_the_client_does_not_load_pandas(module):
    check = f"import sys, {module}; sys.exit('pandas' in sys.modules)"

    completed = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)

    assert completed.returncode == 0, f"importing {module} loaded pandas\n{completed.stderr[-2000:]}"
