"""The package's layering, read from its source: no import cycle, no module
reaching into another's private names, and no GUI or CLI code below the
estimator."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gmm_segmenter

PACKAGE = Path(gmm_segmenter.__file__).parent
ALGORITHM_MODULES = {
    "gmm_segmenter._bias", "gmm_segmenter._covariance", "gmm_segmenter._dask", "gmm_segmenter._hmrf",
    "gmm_segmenter._image", "gmm_segmenter._kernel", "gmm_segmenter._mixture",
    "gmm_segmenter._model", "gmm_segmenter._mrf", "gmm_segmenter._source",
    "gmm_segmenter._training", "gmm_segmenter._warmup", "gmm_segmenter.estimator",
    "gmm_segmenter.io",
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name an ``ImportFrom`` node imports from."""
    if node.level == 0:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str):
    """``(imported module, bound name or None, node)`` for every import in ``module``,
    at any depth (a function-level import still makes a cycle)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, alias.asname, node
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                if candidate in MODULES:  # ``from . import _image``
                    yield candidate, alias.asname or alias.name, node
                else:  # ``from ._image import ImageView``
                    yield source, None, node


def _package_graph() -> dict[str, set[str]]:
    graph = {}
    for module in MODULES:
        graph[module] = {
            target for target, _, _ in _imports(module)
            if target in MODULES and target != module and target != "gmm_segmenter"
        }
    return graph


def _find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_modules_to_check():
    assert {"gmm_segmenter.estimator", "gmm_segmenter._kernel", "gmm_segmenter._source"} <= set(
        MODULES
    )


def test_no_import_cycle_between_the_package_modules():
    assert _find_cycle(_package_graph()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_uses_another_modules_private_names(module):
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    aliases = {
        name: target for target, name, _ in _imports(module)
        if name is not None and target in MODULES
    }
    offences = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _resolve(module, node) in MODULES:
            source = _resolve(module, node)
            offences += [
                f"line {node.lineno}: from {source} import {alias.name}"
                for alias in node.names
                if _is_private(alias.name) and f"{source}.{alias.name}" not in MODULES
            ]
        if (
            isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in aliases and aliases[node.value.id] != module
            and _is_private(node.attr)
        ):
            offences.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    assert not offences, offences


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@pytest.mark.parametrize("module", sorted(ALGORITHM_MODULES))
def test_algorithm_modules_import_no_gui_or_command_line_code(module):
    forbidden = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui",
                 "gmm_segmenter.cli", "gmm_segmenter.napari", "matplotlib")
    imported = {target for target, _, _ in _imports(module)}
    assert not {name for name in imported if name.startswith(forbidden)}
