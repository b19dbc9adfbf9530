"""The package's layout rules, checked from the source: imports go downward, interfaces stay apart.

- no module imports a private name (``_x``) of another module;
- ``cli/`` and ``explorer/`` never import each other;
- ``core/`` imports nothing of convmatrix outside ``core/`` and no optional package;
- the modules' import graph (top-level and deferred imports alike) has no cycle.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parent.parent / "src" / "convmatrix"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path):
    """(imported module, [names]) for every import of convmatrix in the file, relative ones resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "convmatrix":
                yield module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "convmatrix":
                    yield a.name, []


FILES = sorted(SRC.rglob("*.py"))
MODULES = {_module_name(p) for p in FILES}


def _resolve(module: str, names: list[str]) -> list[str]:
    """The modules an import statement loads: ``from pkg import mod`` loads ``pkg.mod``."""
    loaded = [module]
    loaded += [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    return [m for m in loaded if m in MODULES]


def test_no_private_name_is_imported_across_modules():
    offences = []
    for path in FILES:
        for module, names in _imports(path):
            for n in names:
                if n.startswith("_") and not n.startswith("__") and f"{module}.{n}" not in MODULES:
                    offences.append(f"{_module_name(path)} imports {module}.{n}")
    assert offences == []


@pytest.mark.parametrize("a, b", [("cli", "explorer"), ("explorer", "cli")])
def test_the_interfaces_never_import_each_other(a, b):
    offences = [f"{_module_name(p)} imports {m}" for p in FILES if _module_name(p).startswith(f"convmatrix.{a}")
                for m, names in _imports(p) for r in _resolve(m, names) if r.startswith(f"convmatrix.{b}")]
    assert offences == []


def test_the_core_imports_only_the_core():
    offences = [f"{_module_name(p)} imports {m}" for p in FILES if _module_name(p).startswith("convmatrix.core")
                for m, names in _imports(p) for r in _resolve(m, names)
                if not r.startswith("convmatrix.core") and r not in ("convmatrix", "convmatrix._optional")]
    assert offences == []


def test_the_import_graph_has_no_cycle():
    graph = {_module_name(p): set() for p in FILES}
    for p in FILES:
        src = _module_name(p)
        for m, names in _imports(p):
            for r in _resolve(m, names):
                # A package's __init__ re-exporting its children is not a cycle of ideas.
                if r != src and not (src.startswith(r + ".") or r == "convmatrix"):
                    graph[src].add(r)
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [node, nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, stack + [node]):
                return True
        state[node] = 2
        return False

    for node in sorted(graph):
        if state.get(node) is None and visit(node, []):
            break
    assert cycle == []
