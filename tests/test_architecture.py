"""The shape of the library, read from its source: no import cycle, the studies outside the
core, method names only where methods live, short parameter lists in the stages."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "layerprune"
METHOD_NAMES = {"deeper_layers", "last_layers", "shortgpt", "finercut", "ppl"}
# the modules of one job's stages: their functions take at most 5 parameters
STAGE_MODULES = ("stages", "pipeline", "job", "heal", "evaluate", "methods", "scan", "surgery")


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text())
    return out


def _type_checking(tree: ast.Module) -> set[int]:
    """Nodes under ``if TYPE_CHECKING:`` (never executed: not a runtime import)."""
    return {
        id(c)
        for n in ast.walk(tree)
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
        for c in ast.walk(n)
    }


def import_graph() -> dict[str, set[str]]:
    """Module -> layerprune modules it imports, at module level or inside functions."""
    mods = modules()
    graph = {}
    for name, tree in mods.items():
        skip, deps = _type_checking(tree), set()
        for n in ast.walk(tree):
            if id(n) in skip:
                continue
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("layerprune"):
                deps.add(n.module)
                deps.update(f"{n.module}.{a.name}" for a in n.names)
            elif isinstance(n, ast.Import):
                deps.update(a.name for a in n.names if a.name.startswith("layerprune"))
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def test_no_import_cycle():
    graph, state, cycles = import_graph(), {}, []

    def visit(m, path):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(path[path.index(d) :] + [d])
            elif d not in state:
                visit(d, [*path, d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_the_core_never_imports_the_studies():
    graph = import_graph()
    core = [m for m in graph if not m.startswith("layerprune.studies")]
    for m in core:
        assert not any(d.startswith("layerprune.studies") for d in graph[m]), m


def test_method_names_only_in_methods_and_studies():
    """Reports group by a method's declared ``family``; no code outside ``methods/`` and the
    studies tests a method's name (docstrings may mention one)."""
    for name, tree in modules().items():
        if name.startswith(("layerprune.methods", "layerprune.studies")):
            continue
        docs = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef)
            and n.body
            and isinstance(n.body[0], ast.Expr)
        }
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
                assert n.value not in METHOD_NAMES, f"{name}: {n.value!r}"


def test_stage_functions_take_at_most_five_parameters():
    for name, tree in modules().items():
        if name.split(".")[1:2] not in ([m] for m in STAGE_MODULES):
            continue
        for n in ast.walk(tree):
            if isinstance(n, ast.FunctionDef):
                a = n.args
                params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
                count = len(params) - (params[0].arg in ("self", "cls") if params else 0)
                assert count <= 5, f"{name}.{n.name} takes {count} parameters"
