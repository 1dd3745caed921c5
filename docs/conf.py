"""Sphinx configuration of the provider's docs: `make docs` builds them, and a warning fails the build."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# autodoc documents the checkout being built, not whatever copy of the package the venv has installed.
sys.path.insert(0, str(ROOT))
# Importing the operator imports Airflow, which reads (and on first use writes) its AIRFLOW_HOME; the build
# keeps that out of ~/airflow. No metadata database is needed: nothing is created or queried.
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / "build" / "docs" / "airflow-home"))

from airflow_provider_gravity.version import __version__  # noqa: E402

project = "airflow-provider-gravity"
author = "airflow-provider-gravity contributors"
copyright = "the airflow-provider-gravity contributors"
release = version = __version__

extensions = ["sphinx.ext.autodoc"]
exclude_patterns = ["_build"]
root_doc = "index"

# The operator's arguments are written once, in its docstring: the class docstring with its ``:param:`` list,
# and the signature (with the defaults) from ``__init__``; type hints go beside each argument.
autoclass_content = "class"
autodoc_class_signature = "mixed"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_member_order = "bysource"

html_theme = "alabaster"
html_title = f"{project} {release}"
