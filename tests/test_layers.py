"""The import rule, checked on the source: imports point one way, and each native library has one home.

cli -> chat -> answer -> routing / generation -> nouns (types, config, errors, paths, models, tuning).
Library code never imports the CLI, and the pipelines (routing, generation, evaluation, models,
answer) do not print through the CLI's rendering (render.py, render_route.py); generation never
imports routing; the package never imports the bench or the predictor's training code (neither
ships with it); only the llama backend loads llama_cpp and only the predictor runtime loads
onnxruntime.

Every import counts, at module level or inside a function (a deferred import still runs, and
still ties the modules together); only `if TYPE_CHECKING:` blocks are skipped, since they never
run. An import of `a.b.c` is an edge to the module `a.b.c` (not to the packages above it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "qroute_cli"

# Known breaks of the rule that are being fixed elsewhere: (importer, imported). Remove an entry
# when its import is gone (test_allowed_breaks_are_still_needed says which).
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node that can run (not under `if TYPE_CHECKING:`)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _imports_in(child))
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _imports(node)


def import_graph() -> dict[str, set[str]]:
    """module -> every module or top-level package it imports (qroute_cli modules by full name)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in files else base)  # `from pkg import module` names the module
        graph[name] = {_resolve(t, files) for t in targets}
    return graph


def _resolve(target: str, files: dict[str, Path]) -> str:
    """A qroute_cli import -> the module it loads (the longest known prefix); others -> the top package."""
    if not target.startswith("qroute_cli"):
        return target.split(".")[0]
    while target not in files and "." in target:
        target = target.rpartition(".")[0]
    return target


GRAPH = import_graph()


def _under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def breaks(rule) -> set[tuple[str, str]]:
    return {(m, t) for m, targets in GRAPH.items() for t in targets if rule(m, t)}


def _library_imports_cli(m: str, t: str) -> bool:
    library = ("qroute_cli.chat", "qroute_cli.routing", "qroute_cli.generation", "qroute_cli.evaluation",
               "qroute_cli.models", "qroute_cli.answer")
    return _under(m, *library) and _under(t, "qroute_cli.cli")


def _pipeline_renders(m: str, t: str) -> bool:
    pipelines = ("qroute_cli.routing", "qroute_cli.generation", "qroute_cli.evaluation", "qroute_cli.models",
                 "qroute_cli.answer")
    return _under(m, *pipelines) and _under(t, "qroute_cli.render", "qroute_cli.render_route")


def _generation_imports_routing(m: str, t: str) -> bool:
    return _under(m, "qroute_cli.generation") and _under(t, "qroute_cli.routing")


def _imports_bench_or_predictor(m: str, t: str) -> bool:
    return t in ("bench", "predictor")


def _native_outside_its_home(m: str, t: str) -> bool:
    return (t == "llama_cpp" and m != "qroute_cli.generation.backends.llama") or \
        (t == "onnxruntime" and m != "qroute_cli.routing.predict")


RULES = {
    "library code imports the CLI": _library_imports_cli,
    "a pipeline prints through the CLI's rendering (render.py)": _pipeline_renders,
    "generation imports routing": _generation_imports_routing,
    "the package imports bench/ or predictor/": _imports_bench_or_predictor,
    "a native library is imported outside its one module": _native_outside_its_home,
}


def test_the_graph_sees_imports_inside_functions():
    # The CLI loads its commands inside a function (so that --help stays fast): still an edge.
    assert "qroute_cli.cli.commands" in GRAPH["qroute_cli.cli"]
    assert "qroute_cli.cli.options" in GRAPH["qroute_cli.cli.commands.run"]
    assert "llama_cpp" in GRAPH["qroute_cli.generation.backends.llama"]
    assert "qroute_cli.chat.session" not in GRAPH["qroute_cli.chat.slash"]  # under TYPE_CHECKING only


@pytest.mark.parametrize("rule", list(RULES))
def test_imports_follow_the_layers(rule):
    found = breaks(RULES[rule]) - ALLOWED
    assert not found, f"{rule}: " + ", ".join(f"{m} -> {t}" for m, t in sorted(found))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    graph = {m: {t for t in ts if t != m and (m, t) not in ALLOWED} for m, ts in GRAPH.items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_allowed_breaks_are_still_needed():
    stale = {(m, t) for m, t in ALLOWED if t not in GRAPH.get(m, ())}
    assert not stale, f"these imports are gone; remove them from ALLOWED: {sorted(stale)}"
