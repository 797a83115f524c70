"""The layers of python/deltaonnx (README, "Layout"): the CLI on top, the tools (bench, calibrate, demo, serving)
below it, the library at the bottom, graph_passes under everything. Read from the source with `ast`, so a cycle
hidden in a function's import counts too.

    python tests/tools/test_import_graph.py [REPO]     # prints every problem; exit status 1 if there is one
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = "deltaonnx"
REPO = Path(__file__).resolve().parents[2]
CLI, TOOLS = ("cli",), ("bench", "calibrate", "demo", "serving")
# Imported inside functions on purpose: the compiled module is optional (a build without pybind11).
LAZY_ALLOWED = {f"{PACKAGE}._native"}


def package_modules(repo: Path) -> dict[str, Path]:
    """Module name -> file, as installed: python/deltaonnx/... and graph_passes/ as deltaonnx.graph_passes."""
    roots = {PACKAGE: repo / "python" / PACKAGE, f"{PACKAGE}.graph_passes": repo / "graph_passes"}
    modules = {}
    for prefix, root in roots.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([prefix, *parts])] = path
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported deltaonnx module, imported inside a function) for every import statement of the module."""
    is_package = path.name == "__init__.py"
    found = []

    def resolve(module: str | None, level: int) -> str:
        if level == 0:
            return module or ""
        base = name.split(".")
        base = base[: len(base) - level + (1 if is_package else 0)]
        return ".".join(base + ([module] if module else []))

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                target = resolve(child.module, child.level)
                # `from package import submodule` imports the submodule
                subs = [f"{target}.{alias.name}" for alias in child.names
                        if f"{target}.{alias.name}" in known | LAZY_ALLOWED]
                found.extend((sub, inner) for sub in subs)
                if len(subs) < len(child.names):
                    found.append((target, inner))
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), False)
    return [(target, inner) for target, inner in found
            if target == PACKAGE or target.startswith(PACKAGE + ".")]


def layer(module: str) -> str:
    part = module.split(".")[1] if module.count(".") else ""
    if part in CLI or module == f"{PACKAGE}.__main__":
        return "cli"
    if part in TOOLS:
        return "tools"
    if part == "graph_passes":
        return "graph_passes"
    return "library"


RANK = {"graph_passes": 0, "library": 1, "tools": 2, "cli": 3}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each a cycle of imports."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def import_problems(repo: Path = REPO) -> list[str]:
    modules = package_modules(repo)
    graph: dict[str, set[str]] = defaultdict(set)
    problems = []
    for name, path in modules.items():
        for target, nested in imports_of(name, path, set(modules)):
            if layer(name) == "graph_passes" and layer(target) != "graph_passes":
                problems.append(f"{name} (graph_passes) imports {target}: graph_passes imports nothing from deltaonnx")
            if target not in modules:
                continue  # the compiled _native module, or a name that is no module
            if target == name or name.startswith(target + "."):
                continue  # a module reading its own package's __init__ would be a cycle: reported below if so
            graph[name].add(target)
            if nested and target not in LAZY_ALLOWED:
                problems.append(f"{name} imports {target} inside a function")
            if RANK[layer(target)] > RANK[layer(name)]:
                problems.append(f"{name} ({layer(name)}) imports {target} ({layer(target)}), a layer above it")
    for name, path in modules.items():  # `from .. import X` of a parent package: an edge to that __init__
        for target, _ in imports_of(name, path, set(modules)):
            if name.startswith(target + ".") and target in modules:
                graph[name].add(target)
    problems += [f"import cycle: {' -> '.join(component)}" for component in cycles(graph)]
    return problems


def test_layers_hold_and_nothing_imports_in_a_cycle():
    assert import_problems() == []


def test_the_check_sees_a_cycle_a_hidden_import_and_an_upward_import(tmp_path):
    (tmp_path / "python" / PACKAGE / "cli").mkdir(parents=True)
    (tmp_path / "graph_passes").mkdir()
    files = {
        "python/deltaonnx/__init__.py": "",
        "python/deltaonnx/cli/__init__.py": "from ..bench import run\n",
        "python/deltaonnx/bench.py": "def run():\n    from .cli import main\n",
        "python/deltaonnx/convert.py": "from .session import DeltaSession\n",
        "python/deltaonnx/session.py": "from . import convert\n",
        "graph_passes/__init__.py": "from deltaonnx import session\n",
    }
    for relative, text in files.items():
        (tmp_path / relative).write_text(text)
    problems = "\n".join(import_problems(tmp_path))
    assert "deltaonnx.bench imports deltaonnx.cli inside a function" in problems
    assert "deltaonnx.bench (tools) imports deltaonnx.cli (cli), a layer above it" in problems
    assert "import cycle: deltaonnx.convert -> deltaonnx.session" in problems
    assert "deltaonnx.graph_passes (graph_passes) imports deltaonnx.session: graph_passes imports nothing" in problems


if __name__ == "__main__":
    found = import_problems(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else REPO)
    print("\n".join(found) or "no import cycles; every layer imports only the layers below it")
    sys.exit(1 if found else 0)
