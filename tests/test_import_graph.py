"""No package cycle in moloch_exp (issue 21 item 5): the import graph, read with ``ast`` from every module,
counting imports at module level, inside functions and under ``if TYPE_CHECKING``, is acyclic.

Granularity: a node is a subpackage of moloch_exp (``stages``, ``probes``, ``llm``, ...) or a top-level
module (``pipeline``, ``io``, ``results``, ...); imports between modules of one node are not edges. So a
subpackage may be split into modules freely, but two of them never need each other (the layering:
records/io/errors at the bottom, then llm, prompts, tasks, audience and probes, stages, report,
pipeline and the entry points at the top). Imports by name at run time (``importlib.import_module`` of
a class path stored in results.json) are not edges.

    PYTHONPATH=$PWD python -m pytest tests/test_import_graph.py -q
"""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "moloch_exp"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def node_of(module: str) -> str | None:
    """The subpackage or top-level module of moloch_exp that ``module`` belongs to (None: moloch_exp itself)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "moloch_exp" and len(parts) > 1 else None


def imported_modules(path: Path, modules: set[str]) -> list[tuple[str, int]]:
    """Every moloch_exp module ``path`` imports, anywhere in it, with the line."""
    here = module_name(path)
    out = []
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(n, ast.Import):
            out += [(a.name, n.lineno) for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            if n.level:  # relative: from the package of this module, n.level - 1 levels up
                base = here.split(".") if path.name == "__init__.py" else here.split(".")[:-1]
                base = base[: len(base) - (n.level - 1)]
                source = ".".join(base + ([n.module] if n.module else []))
            else:
                source = n.module or ""
            # `from moloch_exp.stages import build` imports the module moloch_exp.stages.build
            out += [(f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source, n.lineno) for a in n.names]
    return [(m, line) for m, line in out if m == "moloch_exp" or m.startswith("moloch_exp.")]


def package_graph() -> dict[str, dict[str, list[str]]]:
    """node → {node it imports: ["module:line -> module", ...]}."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, dict[str, list[str]]] = {}
    for module, path in files.items():
        a = node_of(module)
        graph.setdefault(a, {})
        for target, line in imported_modules(path, set(files)):
            b = node_of(target)
            if a and b and a != b:
                graph[a].setdefault(b, []).append(f"{module}:{line} -> {target}")
    return graph


def first_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter({a: set(bs) for a, bs in graph.items() if a}).prepare()
    except graphlib.CycleError as err:
        return err.args[1]
    return None


def test_the_graph_sees_imports_at_module_level_and_inside_functions():
    graph = package_graph()
    assert {"stages", "probes", "llm", "report", "pipeline", "prompts"} <= set(graph)
    assert any(w.startswith("moloch_exp.stages.plan:") for w in graph["stages"]["probes"] + graph["stages"]["protocols"])
    inside = graph["gpu_check"]["pipeline"]  # imported inside run_check (torch-heavy tool)
    assert inside and all(w.startswith("moloch_exp.gpu_check:") for w in inside)
    assert first_cycle({"a": {"b": ["x"]}, "b": {"c": ["y"]}, "c": {"a": ["z"]}}) is not None  # the check can fail


def test_moloch_exp_has_no_package_cycle():
    graph = package_graph()
    cycle = first_cycle(graph)
    if cycle is not None:
        edges = [f"{a} -> {b}: {graph[a][b][:3]}" for a, b in zip(cycle, cycle[1:])]
        pytest.fail("package cycle " + " -> ".join(cycle) + "\n" + "\n".join(edges))
