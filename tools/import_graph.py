"""The import graph of the provider's core: which part of ``conversions/`` imports which, and whether any
stage imports a later one.

Run from the repository root: ``python tools/import_graph.py`` prints one line per part with the parts it
imports, then every import that points backwards (a stage importing a later stage, or the shared core
importing a stage), and exits 1 when there is one. It reads the source with :mod:`ast`; nothing is imported.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = "airflow_provider_gravity"
CORE = f"{PACKAGE}.conversions"
#: The stages in the order a row travels; the shared core (the modules directly in ``conversions/``) is before all.
STAGES = ("read", "pii", "events", "api", "run")
SHARED = "(core)"


def part_of(module: str) -> str | None:
    """The part of ``conversions/`` a dotted module name belongs to: a stage, the shared core, or ``None``."""
    if module != CORE and not module.startswith(CORE + "."):
        return None
    rest = module[len(CORE) + 1 :].split(".")
    return rest[0] if rest[0] in STAGES else SHARED


def imported_modules(path: Path, module: str) -> set[str]:
    """The modules a source file imports, relative imports resolved, ``TYPE_CHECKING`` blocks included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, one level up per extra dot
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    """Each part of ``conversions/`` with the other parts it imports."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in sorted((root / PACKAGE / "conversions").rglob("*.py")):
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        source = part_of(module)
        assert source is not None
        edges[source]
        for imported in imported_modules(path, module):
            target = part_of(imported)
            if target is not None and target != source:
                edges[source].add(target)
    return edges


def _rank(part: str) -> int:
    return -1 if part == SHARED else STAGES.index(part)


def backward_edges(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The imports that point from a part to a later one (or from the core to any stage)."""
    return sorted(
        (source, target) for source, targets in edges.items() for target in targets if _rank(target) > _rank(source)
    )


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    edges = graph(root)
    for part in sorted(edges, key=_rank):
        targets = ", ".join(sorted(edges[part], key=_rank)) or "-"
        print(f"{part:<8} imports {targets}")
    backward = backward_edges(edges)
    for source, target in backward:
        print(f"BACKWARD: {source} imports {target}, a later stage")
    return 1 if backward else 0


if __name__ == "__main__":
    sys.exit(main())
