"""The package's import graph: no cycles (lazy imports inside functions count too), imports
point down DESIGN.md's dependency order, and code outside models/ never probes a model."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "vaelab"
# DESIGN.md's order, lowest first: a module may import only from its own layer or below.
LAYERS = [
    {"errors", "fileio", "config"},
    {"data", "distributions", "priors", "flows", "nets", "theory"},
    {"models"},
    {"run", "training", "evaluation", "samplers"},
    {"viz", "export"},
    {"tour", "serve"},
    {"cli", "__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = SRC / name.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").is_file()


def imports_of(path: Path) -> set[str]:
    """Every vaelab module `path` imports, anywhere in the file (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vaelab")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vaelab"):
            for alias in node.names:  # `from vaelab.x import y` may name a module y
                sub = f"{node.module}.{alias.name}"
                found.add(sub if is_module(sub) else node.module)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name}
            for name, path in modules.items()}  # fmt: skip


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "vaelab"


def layer(module: str) -> int:
    name = top(module)
    return next((i for i, group in enumerate(LAYERS) if name in group), 0)


def test_the_import_graph_has_no_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if nxt.startswith(node + ".") or node == "vaelab":
                continue  # a package's __init__ re-exporting its own modules is no cycle
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def test_imports_point_down_the_layers():
    wrong = [
        f"{a} imports {b}"
        for a, targets in graph().items()
        for b in targets
        if top(a) != top(b) and layer(b) > layer(a) and top(a) != "vaelab"
    ]
    assert not wrong


def test_nothing_outside_models_probes_a_model():
    probe = re.compile(r"(hasattr|getattr)\(\s*(model|self\.model|explorer\.model|m)\b"
                       r"|\.conditional\b")  # fmt: skip
    hits = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        if "models" not in path.relative_to(PACKAGE).parts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if probe.search(line)
    ]
    assert not hits


def test_no_private_torch_call_and_no_ctypes():
    private = re.compile(r"\btorch\._[a-z]|\bimport ctypes|\bfrom ctypes\b")
    hits = [
        f"{path.relative_to(SRC)}:{n}"
        for path in PACKAGE.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line.split("#")[0])
    ]
    assert not hits


def test_the_data_package_names_each_export_once_in_all():
    import vaelab.data as data

    assert sorted(data.__all__) == sorted(data._HOME_OF)
    assert all(getattr(data, name) is not None for name in data.__all__)
