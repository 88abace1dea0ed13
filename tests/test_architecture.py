"""The package map docs/architecture.md draws, held by a test: arrows point down, never in a circle.

Layers, top to bottom: nodes/ (ComfyUI) and trainer/ and research/ -> asd_core/cli/ (thin
command-line leaves) -> asd_core/ (the library). The library imports no CLI, trainer, node or
research code; the CLIs import no trainer or node code; nothing imports research/. Every import
counts, also the lazy ones inside functions: a lazy import hides a circle at run time, not in
the design. Small modules with one job: none of asd_core/, trainer/ or nodes/ is over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("asd_core", "trainer", "nodes", "research")
MAX_LINES = 400


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages (package = its __init__)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Repo modules `name` imports anywhere in its file (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                if base == [] or base[0] not in PACKAGES:  # the pack's own `..asd_core` from nodes/
                    base = []
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in known else stem for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `asd_core.checkpoint.load_model` -> the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def layer(module: str) -> str:
    if module.startswith("asd_core.cli"):
        return "cli"
    return module.split(".")[0]


ALLOWED = {  # layer -> layers it may import
    "asd_core": {"asd_core"},
    "cli": {"asd_core", "cli"},
    "nodes": {"nodes", "asd_core"},
    "trainer": {"trainer", "asd_core"},
    "research": {"research", "trainer", "asd_core", "cli"},
}


def test_every_arrow_points_down(graph):
    wrong = sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                   if layer(target) not in ALLOWED[layer(source)])
    assert not wrong, "imports against the layering (see the module docstring):\n" + "\n".join(wrong)


def test_the_generic_library_takes_nothing_from_the_toy_domain(graph):
    """asd_core's root serves any causal Wan; the toy domain (its vocabulary, text encoder, sizes and
    shipped default) lives in asd_core.toy. Only Pipeline.load reaches down into it, for the
    built-in default it falls back to."""
    root = {name for name, path in module_files().items() if path.parent == REPO / "asd_core"}  # asd_core/*.py
    wrong = sorted(f"{source} -> {target}" for source in root - {"asd_core.pipeline"} for target in graph[source]
                   if target.startswith("asd_core.toy"))
    assert not wrong, "generic modules importing the toy domain:\n" + "\n".join(wrong)


def test_no_import_circle(graph):
    """Modules and package __init__ files together form a DAG (a package that builds its
    members, like a stage registry, counts as the module it is)."""
    edges = graph
    state, stack, circles = {}, [], []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                circles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_graph_sees_lazy_and_relative_imports(graph):
    """The parser itself: a lazy relative import inside a function is an edge."""
    assert "asd_core.checkpoint" in graph["asd_core.pipeline"]  # `from .checkpoint import load_model` in a method
    assert "asd_core.model" in graph["asd_core.checkpoint"]
    assert any(target.startswith("asd_core") for target in graph["nodes.loader"])  # `from ..asd_core...` (the pack)


def test_no_module_is_over_400_lines():
    long = sorted(f"{path.relative_to(REPO)}: {n} lines" for path in module_files().values()
                  if path.parts[len(REPO.parts)] != "research" and (n := len(path.read_text().splitlines())) > MAX_LINES)
    assert not long, f"split these modules (at most {MAX_LINES} lines each):\n" + "\n".join(long)
