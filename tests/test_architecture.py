"""The package's shape: every module imports only modules below it, so data flows one way
(capture -> counting -> report -> views -> command line)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import opscope

PACKAGE = Path(opscope.__file__).parent

LAYERS = (
    "opscope.version",
    "opscope.choices",
    "opscope.format",
    "opscope.inputs",
    "opscope.catalogue",
    "opscope.exports",
    "opscope.dispatch",
    "opscope.formulas",  # the formula registry and families, a unit: see below
    "opscope.records",
    "opscope.capture",
    "opscope.counting",
    "opscope.report",
    "opscope.distributed",
    "opscope.profiler",
    "opscope.meta",
    "opscope.libraries",
    "opscope.zoo",
    "opscope.compare",
    "opscope.tables",
    "opscope.terminal",
    "opscope.documents",
    "opscope.frames",
    "opscope.plots",
    "opscope.html",
    "opscope.cli",
    "opscope.commands",
    "opscope",
    "opscope.__main__",
)
"""Every module, lowest first: each may import only modules before it."""

DEFERRED_IMPORTS = {
    ("opscope.report", "opscope.terminal"),  # Report.print() draws itself on demand
    ("opscope.distributed", "opscope.terminal"),  # DistributedReport.print() likewise
    ("opscope.cli", "opscope.commands"),  # torch is loaded once the arguments are good
    ("opscope.report", "opscope.frames"),  # Report.to_pandas() makes its frame on demand
    ("opscope.report", "opscope.html"),  # a notebook shows a report as HTML
}
"""The deliberate imports inside a function body that point upward."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _target(module: str | None, name: str) -> str:
    """The opscope module that ``from module import name`` reads (a submodule, or else the
    package itself)."""
    candidate = f"{module}.{name}"
    return candidate if candidate in MODULES else str(module)


def _imports(tree: ast.Module) -> tuple[set[str], set[str]]:
    """The opscope modules imported at module level (type-only imports under
    ``if TYPE_CHECKING:`` included) and those imported inside functions."""
    top: set[str] = set()
    deferred: set[str] = set()

    def visit(node: ast.AST, inside_function: bool) -> None:
        found = top if not inside_function else deferred
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("opscope"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("opscope"):
            found.update(_target(node.module, alias.name) for alias in node.names)
        inside = inside_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, False)
    return top, deferred


def _layer(module: str) -> int:
    unit = "opscope.formulas" if module.startswith("opscope.formulas") else module
    return LAYERS.index(unit)


IMPORTS = {name: _imports(ast.parse(path.read_text())) for name, path in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        assert name.startswith("opscope.formulas") or name in LAYERS, f"{name} has no layer"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    top, deferred = IMPORTS[module]
    for imported in top:
        if module.startswith("opscope.formulas") and imported.startswith("opscope.formulas"):
            continue  # inside the unit: checked for cycles below
        assert _layer(imported) < _layer(module), f"{module} imports {imported}, above it"
    for imported in deferred:
        if _layer(imported) >= _layer(module):
            assert (module, imported) in DEFERRED_IMPORTS, f"{module} imports {imported} late"


def test_formulas_have_no_import_cycle() -> None:
    graph = {
        name: {m for m in top if m.startswith("opscope.formulas") and m != name}
        for name, (top, _) in IMPORTS.items()
        if name.startswith("opscope.formulas")
    }
    # The package imports every family; the families must not import the package back.
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path, name))
        if name in done:
            return
        for imported in graph.get(name, ()):
            visit(imported, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_the_check_sees_an_upward_import() -> None:
    top, deferred = _imports(ast.parse("from opscope import cli\nif True:\n    import opscope.html\n"
                                       "def f():\n    from opscope.terminal import print_report\n"))
    assert top == {"opscope.cli", "opscope.html"} and deferred == {"opscope.terminal"}
    assert _layer("opscope.cli") > _layer("opscope.report")


def test_the_package_exports_what_it_lists() -> None:
    assert sorted(opscope.__all__) == sorted([*opscope._EXPORTS, "__version__"])
    for name in opscope.__all__:
        assert getattr(opscope, name) is not None
