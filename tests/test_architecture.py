"""The package layering of DESIGN.md, no import circles, and the size limits, read from the source with ``ast``.

Every ``import`` / ``from ... import`` statement counts, at module level or inside a function (a function-level
import is still a dependency, and still closes a circle when the function runs during an import).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common_regs", "recsys", "retrieval", "pipelines")
# Imports point down only: a package may import itself and what this maps it to, nothing else of regkit.
ALLOWED = {
    "common_regs": {"common_regs"},
    "recsys": {"recsys", "common_regs"},
    "retrieval": {"retrieval", "common_regs"},
    "pipelines": set(PACKAGES),
}
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
SIZE_EXEMPT = ("pipelines/bench/",)  # benchmark scripts, not library code


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: str  # path:line of the import statement


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _library_files(root: Path) -> dict[str, Path]:
    return {_module_name(p, root): p for package in PACKAGES for p in sorted((root / package).rglob("*.py"))}


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Dotted names an import statement may load: ``a.b`` for ``import a.b``, ``a.b.c`` for ``from a.b import c``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolved against the importing module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([node.module] if node.module else [])])
    return [f"{base}.{alias.name}" for alias in node.names]


def import_edges(root: Path) -> list[Edge]:
    """One edge per import of a regkit module, to the deepest module the imported name resolves to.

    ``import pkg`` of the importing module's own parent package is no edge: Python has imported the parents before
    the module runs, so it loads nothing (``common_regs.registry`` reads ``common_regs.__path__`` this way).
    """
    files = _library_files(root)
    edges = []
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in _imported_names(node, module, is_package):
                target = name
                while target and target not in files:
                    target = target.rpartition(".")[0]
                parent = isinstance(node, ast.Import) and module.startswith(f"{target}.")
                if target and target != module and not parent:
                    edges.append(Edge(module, target, f"{path.relative_to(root)}:{node.lineno}"))
    return edges


def layering_violations(edges: list[Edge]) -> list[str]:
    return [
        f"{edge.where}: {edge.source} imports {edge.target}"
        for edge in edges
        if edge.target.split(".")[0] not in ALLOWED[edge.source.split(".")[0]]
    ]


def import_cycles(edges: list[Edge]) -> list[str]:
    """One circle per strongly connected group of modules, each step with the file:line of its import."""
    graph = nx.DiGraph()
    for edge in edges:
        graph.add_edge(edge.source, edge.target, where=edge.where)
    circles = []
    for group in nx.strongly_connected_components(graph):
        if len(group) > 1:
            cycle = nx.find_cycle(graph.subgraph(group))
            steps = " -> ".join(f"{a} ({graph.edges[a, b]['where']})" for a, b in cycle)
            circles.append(f"{steps} -> {cycle[0][0]}")
    return sorted(circles)


def size_violations(root: Path) -> dict[tuple[str, str], str]:
    """``{(path, "<file>" or function name): what}`` for library files or functions over their line limit."""
    found: dict[tuple[str, str], str] = {}
    for path in _library_files(root).values():
        relative = path.relative_to(root).as_posix()
        if relative.startswith(SIZE_EXEMPT):
            continue
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_FILE_LINES:
            found[relative, "<file>"] = f"{lines} lines (limit {MAX_FILE_LINES})"
        for node in ast.walk(ast.parse(text, filename=relative)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found[relative, node.name] = f"line {node.lineno}: {length} lines (limit {MAX_FUNCTION_LINES})"
    return found


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_edges(ROOT)


def test_the_checks_catch_circles_and_upward_imports(tmp_path: Path) -> None:
    sources = {
        "common_regs/__init__.py": "",
        "common_regs/registry.py": "def load_all():\n    import common_regs\n",  # its own parent: loads nothing
        "common_regs/ot/__init__.py": "from common_regs.ot.solver import solve\n",
        "common_regs/ot/_utils.py": "def cost():\n    from .solver import solve\n",  # relative, inside a function
        "common_regs/ot/solver.py": "from common_regs.ot._utils import cost\n",
        "recsys/__init__.py": "",
        "recsys/model.py": "from pipelines import report\n",
        "retrieval/__init__.py": "",
        "pipelines/__init__.py": "",
        "pipelines/report.py": "import recsys.model\n",
    }
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    edges = import_edges(tmp_path)
    assert layering_violations(edges) == ["recsys/model.py:1: recsys.model imports pipelines.report"]
    circles = import_cycles(edges)
    assert len(circles) == 2
    assert any("common_regs.ot._utils (common_regs/ot/_utils.py:2)" in circle for circle in circles)
    assert any("recsys.model (recsys/model.py:1)" in circle for circle in circles)
    assert not [edge for edge in edges if edge.source == "common_regs.registry"]


def test_the_graph_sees_every_package(edges: list[Edge]) -> None:
    assert {edge.source.split(".")[0] for edge in edges} == set(PACKAGES)
    # imports inside functions count (pipelines/cli/demo.py imports pipelines.demo inside its command)
    assert any(edge.source == "pipelines.cli.demo" and edge.target == "pipelines.demo" for edge in edges)


def test_imports_point_down_only(edges: list[Edge]) -> None:
    violations = layering_violations(edges)
    assert not violations, "imports must point down (DESIGN.md, Layers):\n" + "\n".join(violations)


def test_no_import_circles(edges: list[Edge]) -> None:
    circles = import_cycles(edges)
    assert not circles, "import circles (move the shared piece below both modules):\n" + "\n".join(circles)


def test_files_and_functions_are_small() -> None:
    found = size_violations(ROOT)
    unexpected = [f"{path} {name}: {what}" for (path, name), what in sorted(found.items())]
    assert not unexpected, "split by topic or into named steps:\n" + "\n".join(unexpected)
