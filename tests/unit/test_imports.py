"""
What importing the provider's light parts loads. A DAG file imports the operator, so every parse of every DAG
that uses it pays for what the import loads: the operator, the hook and the package load no pandas, numpy or
pyarrow (issue 18), the client and ``conversions`` no pandas.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

IMPORT_FAILED = 2
LOADED_HEAVY = 3

# Run in a fresh interpreter: imports ``module``, exits IMPORT_FAILED if that raises, LOADED_HEAVY (naming each
# module and the provider line that first imported it) if it loaded one of ``banned``, 0 otherwise.
CHECK = textwrap.dedent(
    """
    import sys, traceback
    module, banned = sys.argv[1], sys.argv[2].split(",")
    first_import = {{}}

    class Watch:
        def find_spec(self, name, path=None, target=None):
            if name in banned and name not in first_import:
                lines = [line for line in traceback.format_stack() if "airflow_provider_gravity" in line]
                first_import[name] = lines[-1].strip() if lines else "(outside the provider)"
            return None

    sys.meta_path.insert(0, Watch())
    try:
        __import__(module)
    except BaseException:
        traceback.print_exc()
        sys.exit({import_failed})
    loaded = [name for name in banned if name in sys.modules]
    if loaded:
        for name in loaded:
            print(f"{{name}} first imported by: {{first_import.get(name)}}", file=sys.stderr)
        sys.exit({loaded_heavy})
    """
).format(import_failed=IMPORT_FAILED, loaded_heavy=LOADED_HEAVY)


def import_in_a_fresh_interpreter(module: str, banned: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHECK, module, ",".join(banned)], capture_output=True, text=True, timeout=120
    )


def assert_imports_without(module: str, banned: list[str]) -> None:
    completed = import_in_a_fresh_interpreter(module, banned)
    assert completed.returncode != IMPORT_FAILED, f"importing {module} failed\n{completed.stderr[-3000:]}"
    assert completed.returncode != LOADED_HEAVY, f"importing {module} loaded\n{completed.stderr[-3000:]}"
    assert completed.returncode == 0, f"exit {completed.returncode}\n{completed.stderr[-3000:]}"


@pytest.mark.parametrize(
    "module",
    [
        "airflow_provider_gravity",
        "airflow_provider_gravity.hooks.gravity",
        "airflow_provider_gravity.operators.send_conversions",
    ],
)
def test_what_a_dag_file_imports_loads_no_pandas_numpy_or_pyarrow(module):
    assert_imports_without(module, ["pandas", "numpy", "pyarrow"])


@pytest.mark.parametrize(
    "module", ["airflow_provider_gravity.conversions.api.client", "airflow_provider_gravity.conversions"]
)
def test_importing_the_client_or_the_core_package_does_not_load_pandas(module):
    assert_imports_without(module, ["pandas", "pyarrow"])


def test_the_check_tells_a_failed_import_from_a_heavy_one():
    assert (
        import_in_a_fresh_interpreter("airflow_provider_gravity.no_such_module", ["pandas"]).returncode == IMPORT_FAILED
    )
    heavy = import_in_a_fresh_interpreter("airflow_provider_gravity.conversions.run.pipeline", ["pandas", "numpy"])
    assert heavy.returncode == LOADED_HEAVY
    assert "pandas first imported by" in heavy.stderr and "numpy first imported by" in heavy.stderr
