"""The import graph against the layers of shared/design.md §3.

Layers, bottom to top: `drivers`, `protocols` and `analysis` (analysis pure: it imports nothing of
insitem but itself), `simulators`, `acquisition`, then the public API and the commands (`cli`,
which nothing imports). A module
may import its own package and the packages below it, never above; and no two modules may import
each other, directly or through others, even from inside functions (an import inside a function
hides a cycle from the interpreter, not from a reader).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["drivers", "protocols", "analysis", "simulators", "acquisition", "api", "cli"]

#: what each package may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "drivers": set(),
    "protocols": {"drivers"},
    "analysis": set(),
    "simulators": {"drivers", "protocols"},
    "acquisition": {"drivers", "protocols", "analysis", "simulators"},
    "api": {"drivers", "protocols", "analysis", "simulators", "acquisition"},
    "cli": {"drivers", "protocols", "analysis", "simulators", "acquisition", "api"},
}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        base = ROOT / pkg
        if not base.is_dir():
            continue
        for path in base.rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out["insitem." + ".".join(parts)] = path
    return out


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:` (annotations only, never executed)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """insitem modules imported anywhere in the file (module level or inside functions)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the module pkg.sub; `from pkg import name` imports pkg
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rsplit(".", 1)[0] if "." in name else ""
            # a module's own ancestor packages are initialised before it whatever it imports
            if name and name != module and not module.startswith(name + "."):
                found.add(name)
    return found


GRAPH = {m: _imports(p, m, set(_modules())) for m, p in _modules().items()}


def _package(module: str) -> str:
    return module.split(".")[1]


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down_the_layers(package: str) -> None:
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        if _package(m) == package
        for t in targets
        if _package(t) != package and _package(t) not in ALLOWED[package]
    )
    assert not wrong, "\n".join(wrong)


#: cycles known and left for now, each with its reason; a new cycle fails the test, and so does
#: one of these when it is gone (remove it here then)
KNOWN_CYCLES = {
    # the step registry: schema builds the steps union from the registered kinds and steps.py
    # takes its field types from schema (issue 16: move the shared field types below both)
    frozenset({"insitem.protocols.schema", "insitem.protocols.steps"}),
}


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components of the module graph: every one a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # recursion depth stays at the graph's depth (a few dozen)
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):  # noqa: B023
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    found = {frozenset(c) for c in cycles}
    assert found == KNOWN_CYCLES, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found - KNOWN_CYCLES) + (
        f"; gone (remove from KNOWN_CYCLES): {[sorted(c) for c in KNOWN_CYCLES - found]}" if KNOWN_CYCLES - found else "")


def test_the_graph_is_read() -> None:
    """The scan sees the imports it must judge (a broken scan would pass everything above)."""
    assert "insitem.drivers.interfaces" in GRAPH["insitem.acquisition.runner"]
    assert "insitem.analysis.axes" in GRAPH["insitem.analysis.drift"]
    assert "insitem.api" in GRAPH["insitem.cli.main"] and "insitem.acquisition.launch" in GRAPH["insitem.cli.run"]
    assert len(GRAPH) > 60
