"""The core's stages import one way, as a row travels: read, pii, events, api, run; the shared core imports none."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import import_graph  # noqa: E402


def test_no_stage_imports_a_later_one():
    edges = import_graph.graph(REPO)
    assert set(edges) == {import_graph.SHARED, *import_graph.STAGES}
    assert import_graph.backward_edges(edges) == []


def test_the_shared_core_pii_and_the_client_import_no_stage():
    edges = import_graph.graph(REPO)
    assert edges[import_graph.SHARED] == set()
    assert edges["pii"] == {import_graph.SHARED}
    assert edges["api"] == {import_graph.SHARED}, "the client takes encoded events, never the event builder"


def test_a_backward_import_is_found(tmp_path):
    stage = tmp_path / import_graph.PACKAGE / "conversions" / "read"
    stage.mkdir(parents=True)
    (stage.parent / "__init__.py").write_text("")
    (stage / "__init__.py").write_text("")
    (stage / "chunks.py").write_text("from ..events.build import build_events\n")
    assert import_graph.backward_edges(import_graph.graph(tmp_path)) == [("read", "events")]
