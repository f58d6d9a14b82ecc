"""No import cycle among the package's modules (issue 22).

The graph is read from the source with ``ast``, not by importing: an edge A -> B for every
``import B`` / ``from B import name`` in module A (``from B import m`` where ``B.m`` is a
module is an edge to ``B.m``, the module Python loads), at module level and inside
functions alike (an import moved into a function still ties the two modules together; only
``if TYPE_CHECKING:`` blocks are left out, they never run). Python loads a package's
``__init__`` before its submodules and tolerates a partly initialised parent, so importing
``a.b`` is not counted as an edge to ``a``.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "feedback_alignment"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` bodies."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skip.update(id(n) for n in ast.walk(child))
    return skip


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_blocks(tree)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                targets = []
                for a in node.names:
                    sub = f"{origin}.{a.name}"
                    targets.append(sub if sub in modules else origin)
            else:
                continue
            graph[mod].update(t for t in targets if t in modules and t != mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles among: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_graph_reader_sees_imports_and_finds_a_cycle():
    """The checker itself: it reads relative and absolute imports, and a cycle fails it."""
    graph = import_graph()
    engine = f"{PACKAGE}.twolayer.engine"
    assert f"{PACKAGE}.activations" in graph[engine]  # from ..activations import ...
    assert f"{PACKAGE}.twolayer.rules" in graph[engine]  # from .rules import ...
    assert len(graph) > 40 and sum(map(len, graph.values())) > 100
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_activation_module_is_a_leaf():
    """Every part of the package asks the activation objects; they depend on nothing of it
    but its errors."""
    graph = import_graph()
    assert graph[f"{PACKAGE}.activations"] <= {f"{PACKAGE}.errors"}
