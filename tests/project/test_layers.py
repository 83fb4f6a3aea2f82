"""The package's layering, read from the source: no import cycle, and every layer imports only layers below it.

Imports inside functions count as much as those at the top of a module: a local import hides a cycle from
Python's import machinery, not from a reader.  Imports under `if TYPE_CHECKING:` are left out (they never run,
and they are how a lower layer names a higher layer's type in an annotation).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import pytest
from helpers import ROOT

from deploykit import vocabulary

PACKAGE = ROOT / "deploykit"

#: Lowest first: a layer may import itself and the layers before it, never one after it.
LAYERS = [
    "errors", "vocabulary", "paths", "schema", "yamlfile", "outputs",
    "op", "onnxio", "backends", "results", "execution",
    "export", "fuzz", "lint", "report", "conformance", "profile", "repro",
    "cli", "__main__",
]
#: The most modules that may sit directly in deploykit/ (its __init__ and __main__ included).
MOST_TOP_LEVEL_MODULES = 12


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = _module_names()


def _owner(name: str) -> str:
    """The module `name` refers to: itself, or the nearest enclosing package or module that exists."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return hidden


def _imported(module: str, path: Path) -> set[str]:
    """Every deploykit module that `module` imports, at the top or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hidden = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found.update(_owner(alias.name) for alias in node.names if alias.name.split(".")[0] == "deploykit")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] == "deploykit":
                found.update(_owner(f"{base}.{alias.name}") for alias in node.names)
    found.discard(module)
    return found


GRAPH = {module: _imported(module, path) for module, path in MODULES.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle to report."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_scan_sees_imports_of_every_kind():
    """The checks below are only as good as this reader: it must see top-level, local and relative imports."""
    assert "deploykit.execution.execute" in GRAPH["deploykit.execution.child"]  # top-level `from ... import`
    assert "deploykit.report.escape" in GRAPH["deploykit.repro.templates"]  # inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_itself_back():
    assert _cycles(GRAPH) == []


def test_every_layer_imports_only_layers_below_it():
    order = {name: rank for rank, name in enumerate(LAYERS)}
    upward = []
    for module, targets in sorted(GRAPH.items()):
        source = _layer(module)
        if source == "__init__":
            continue
        assert source in order, f"{module}: add its layer {source!r} to LAYERS in {Path(__file__).name}"
        upward += [f"{module} -> {target}" for target in sorted(targets)
                   if _layer(target) != "__init__" and order[_layer(target)] > order[source]]
    assert upward == []


@pytest.mark.parametrize("layer, allowed", [
    # the operator's maths: readable, testable and reusable alone
    ("deploykit.op", {"deploykit.op", "deploykit.vocabulary"}),
    # the plugin API: a third-party backend imports it without pulling in any runtime, the results or the
    # execution path (its helpers read the model and the op's maths, and time with backends.timing)
    ("deploykit.backends.base", {"deploykit.vocabulary", "deploykit.errors", "deploykit.op", "deploykit.onnxio", "deploykit.backends.timing"}),
    ("deploykit.vocabulary", set()),
])
def test_the_foundations_import_only_what_they_may(layer, allowed):
    outside = {f"{module} -> {target}" for module, targets in GRAPH.items() if module == layer or module.startswith(layer + ".")
               for target in targets if not any(target == name or target.startswith(name + ".") for name in allowed)}
    assert outside == set()


def test_few_modules_sit_directly_in_the_package():
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= MOST_TOP_LEVEL_MODULES, top


@pytest.mark.parametrize("literal, table", [
    (vocabulary.DType, vocabulary.NUMPY_DTYPES), (vocabulary.Precision, vocabulary.PRECISIONS), (vocabulary.Verdict, vocabulary.VERDICTS),
])
def test_each_vocabulary_table_lists_exactly_its_literal(literal, table):
    assert list(get_args(literal)) == list(table)


def test_every_subpackage_ships_in_the_wheel():
    """pyproject.toml lists the packages by name: a new subfolder left out installs as nothing in a wheel."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(init.parent.relative_to(PACKAGE.parent).parts) for init in PACKAGE.rglob("__init__.py")}
    assert folders - listed == set()
