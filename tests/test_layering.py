"""The house's floors: no import circle, no import running back up a floor, small units.

Imports are read from the source with :mod:`ast` (module level, inside functions and inside
``TYPE_CHECKING`` blocks alike), so a lazy import cannot hide a circle or an upward arrow. The
floors, bottom to top (docs/ARCHITECTURE.md draws them):

====  ==========================  ==========================================================
1     ``attacks``                 the Attack protocol, attacks and reference backends
2     ``robustbench_sparse``      core: data, models, sparsity, training, checkpoints
3     ``evaluations.record``      results schema, cells, metrics, budgets, security tables
4     ``evaluations.engine``      grid, protocols, masking probes (writes the record)
4     ``evaluations.present``     figures and the report (reads the record)
5     ``rbs``                     the composition root: argv -> one library call
====  ==========================  ==========================================================

``engine`` and ``present`` share floor 4 and never import each other. The package
``evaluations`` itself (its ``__init__``) holds nothing and imports nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("attacks", "robustbench_sparse", "evaluations", "rbs")

#: floor name -> (prefix, level); the longest matching prefix names a module's floor
FLOORS: dict[str, tuple[str, int]] = {
    "attacks": ("attacks", 1),
    "core": ("robustbench_sparse", 2),
    "record": ("evaluations.record", 3),
    "engine": ("evaluations.engine", 4),
    "present": ("evaluations.present", 4),
    "app": ("rbs", 5),
    "evaluations": ("evaluations", 3),  # the empty package __init__ and evaluations/configs
}

MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 100
#: files or functions allowed over the limits, with the reason (also listed in ARCHITECTURE.md)
SIZE_EXCEPTIONS: dict[str, str] = {}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the four packages."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imported_names(path: Path, module: str) -> Iterator[str]:
    """Every dotted name an import statement of ``path`` names (relative imports resolved).

    ``from a.b import c`` yields ``a.b`` and ``a.b.c``: the second is a module when ``c`` is one.
    """
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: None if is_package else -1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (the owning module of each imported name)."""
    known = modules()

    def owner(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        targets = {owner(name) for name in imported_names(path, module)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def floor_of(module: str) -> str:
    """The floor a module lives on (longest prefix of :data:`FLOORS`)."""
    best, length = "", -1
    for floor, (prefix, _) in FLOORS.items():
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
            best, length = floor, len(prefix)
    if not best:
        raise AssertionError(f"{module} lives on no floor; add its package to FLOORS")
    return best


def allowed(source: str, target: str) -> bool:
    """May a module on floor ``source`` import one on floor ``target``?"""
    if source == target:
        return True
    if {source, target} == {"engine", "present"}:
        return False  # siblings on floor 4
    if target == "evaluations":
        return False  # the package __init__ is empty; import its sub-packages
    return FLOORS[target][1] < FLOORS[source][1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b (floor x -> floor y)`` for every import the floors forbid."""
    return [
        f"{a} -> {b} ({floor_of(a)} -> {floor_of(b)})"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        if not allowed(floor_of(a), floor_of(b))
    ]


# ----------------------------------------------------------------------------- the checks


def test_every_module_lives_on_a_floor() -> None:
    for module in modules():
        floor_of(module)


def test_no_import_circle() -> None:
    assert cycles(import_graph()) == []


def test_no_import_runs_back_up_a_floor() -> None:
    assert upward_arrows(import_graph()) == []


def test_nothing_imports_the_composition_root() -> None:
    graph = import_graph()
    into_app = [
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if floor_of(b) == "app" and floor_of(a) != "app"
    ]
    assert into_app == []


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_files_and_functions_stay_small() -> None:
    too_big: list[str] = []
    for path in modules().values():
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_FILE_LINES and rel not in SIZE_EXCEPTIONS:
            too_big.append(f"{rel}: {lines} lines")
        for fn in _functions(ast.parse(text)):
            length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            where = f"{rel}:{fn.name}"
            if length > MAX_FUNCTION_LINES and where not in SIZE_EXCEPTIONS:
                too_big.append(f"{where}: {length} lines")
    assert too_big == []


# ----------------------------------------------------------------------------- the checker itself


def _graph_from(edges: dict[str, list[str]]) -> dict[str, set[str]]:
    return {k: set(v) for k, v in edges.items()}


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": ["b"], "b": ["a"]}, [["a", "b"]]),
        ({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}, [["a", "b", "c"]]),
        ({"a": ["b"], "b": ["c"], "c": []}, []),
        ({"a": ["b"], "b": ["a"], "c": ["d"], "d": ["c"]}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_cycles_finds_every_circle(edges: dict[str, list[str]], expected: list[list[str]]) -> None:
    assert sorted(cycles(_graph_from(edges))) == expected


@pytest.mark.parametrize(
    ("source", "target", "ok"),
    [
        ("rbs.cli", "evaluations.engine.grid", True),
        ("evaluations.engine.grid", "evaluations.record.cells", True),
        ("evaluations.present.plots", "evaluations.record.results", True),
        ("evaluations.present.report", "evaluations.engine.grid", False),
        ("evaluations.engine.grid", "evaluations.present.plots", False),
        ("evaluations.record.cells", "evaluations.engine.grid", False),
        ("robustbench_sparse.training", "evaluations.record.metrics", False),
        ("robustbench_sparse.training", "attacks.pgd", True),
        ("attacks.pgd", "robustbench_sparse.models", False),
        ("robustbench_sparse.cli", "rbs.cli", False),
    ],
)
def test_allowed_follows_the_floors(source: str, target: str, ok: bool) -> None:
    assert allowed(floor_of(source), floor_of(target)) is ok


def test_lazy_imports_count(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from evaluations.engine.grid import GridRun\n"
        "def f():\n    from rbs import cli\n    from .sibling import x\n"
    )
    names = set(imported_names(source, "evaluations.record.mod"))
    assert {"evaluations.engine.grid", "rbs", "rbs.cli", "evaluations.record.sibling"} <= names
