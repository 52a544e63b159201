"""The package's layers, checked over its imports (module level and inside functions).

The rules are those of ``docs/architecture.md``: a package imports only from its own layer or
the layers below it, never upwards; within a layer the few forbidden pairs are listed; and no two
packages import each other, directly or through others. ``if TYPE_CHECKING:`` imports are
annotations only and are not counted. The checks run on the source text (``ast``), so an import
hidden in a function counts like one at the top of a module.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "duda"

# top to bottom; a unit is a sub-package or a top-level module of duda ("duda" = the facade __init__)
LAYERS: list[tuple[str, set[str]]] = [
    ("entry points", {"duda", "__main__", "cli", "commands"}),
    ("applications", {"api", "engine", "inference", "evaluation", "deploy", "demo", "pretrain", "loading"}),
    ("methods", {"methods"}),
    ("building blocks", {"uda", "models", "data"}),
    (
        "foundation",
        {"config", "config_base", "errors", "files", "log", "progress", "checkpoints", "windows", "_version"},
    ),
]
# pairs inside one layer that must not import each other (importer, imported)
FORBIDDEN: set[tuple[str, str]] = {
    ("engine", "deploy"),
    ("engine", "demo"),
    ("inference", "engine"),
    ("inference", "deploy"),
    ("inference", "evaluation"),
    ("models", "uda"),
    ("uda", "models"),
    ("models", "data"),
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. duda.models.hf
    target: str  # the imported module, e.g. duda.engine.checkpoint
    line: int
    in_function: bool

    @property
    def edge(self) -> tuple[str, str]:
        return unit(self.module), unit(self.target)

    def __str__(self) -> str:
        where = "in a function" if self.in_function else "at module level"
        return f"{self.module}:{self.line} imports {self.target} ({where})"


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "duda"


def layer_of(name: str) -> int:
    for i, (_, units) in enumerate(LAYERS):
        if name in units:
            return i
    raise AssertionError(
        f"duda.{name} is in no layer of tests/test_architecture.py: add it (and to docs/architecture.md)"
    )


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    return skip


def _function_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(id(sub) for sub in ast.walk(node) if sub is not node)
    return inside


def imports_of(module: str, source: str, is_package: bool, submodules: set[str]) -> list[Import]:
    """duda-internal imports of one module's source."""
    tree = ast.parse(source)
    skip, inside = _type_checking_nodes(tree), _function_nodes(tree)
    found: list[Import] = []
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, *([node.module] if node.module else [])])
            # `from duda import log` imports the module duda.log; `from duda import load_model` the facade
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in submodules else base for a in node.names]
        for target in dict.fromkeys(targets):
            if target == "duda" or target.startswith("duda."):
                found.append(Import(module, target, node.lineno, id(node) in inside))
    return found


def all_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(p): (p.read_text(), p.name == "__init__.py") for p in sorted(SRC.rglob("*.py"))}


def all_imports(sources: dict[str, tuple[str, bool]]) -> list[Import]:
    submodules = set(sources)
    return [imp for mod, (text, pkg) in sources.items() for imp in imports_of(mod, text, pkg, submodules)]


def layer_violations(imports: list[Import]) -> list[str]:
    out = []
    for imp in imports:
        a, b = imp.edge
        if a == b:
            continue
        if layer_of(b) < layer_of(a):
            out.append(f"{imp}: {LAYERS[layer_of(a)][0]} must not import {LAYERS[layer_of(b)][0]}")
        elif (a, b) in FORBIDDEN:
            out.append(f"{imp}: {a} must not import {b}")
    return out


def package_cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected sets of more than one unit in the unit-level import graph (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        a, b = imp.edge
        if a != b:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def problems(sources: dict[str, tuple[str, bool]]) -> list[str]:
    imports = all_imports(sources)
    out = layer_violations(imports)
    for cycle in package_cycles(imports):
        edges = sorted({str(i) for i in imports if set(i.edge) <= set(cycle) and i.edge[0] != i.edge[1]})
        out.append(f"import cycle between {', '.join(cycle)}: " + "; ".join(edges[:6]))
    return out


# ---------------------------------------------------------------------------------------- tests


def test_every_unit_has_a_layer():
    for mod in all_sources():
        layer_of(unit(mod))


def test_the_layers_hold():
    found = problems(all_sources())
    assert not found, "\n".join(found)


def _planted(module: str, line: str) -> dict[str, tuple[str, bool]]:
    sources = dict(all_sources())
    text, pkg = sources[module]
    sources[module] = (text + f"\n\ndef _planted():\n    {line}\n", pkg)
    return sources


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        # today's three breaks, each planted inside a function
        ("duda.engine.trainer", "from duda.deploy import onnx_export", "engine must not import deploy"),
        ("duda.methods.duda", "from duda.engine import checkpoint", "methods must not import applications"),
        (
            "duda.models.factory",
            "from duda.engine import checkpoint",
            "building blocks must not import applications",
        ),
        ("duda.models.factory", "from duda.uda import losses", "models must not import uda"),
        ("duda.config", "from duda.methods import registry", "foundation must not import methods"),
    ],
)
def test_a_planted_import_is_caught(module, line, expected):
    found = problems(_planted(module, line))
    assert any(expected in p and module in p for p in found), found


def test_a_planted_cycle_inside_a_layer_is_caught():
    # deploy -> inference is allowed; inference -> deploy closes a cycle (and is forbidden)
    sources = _planted("duda.evaluation.metrics", "from duda.demo import report")
    text, pkg = sources["duda.demo.report"]
    sources["duda.demo.report"] = (text + "\nfrom duda.evaluation import metrics\n", pkg)
    found = problems(sources)
    assert any("import cycle between" in p and "demo" in p and "evaluation" in p for p in found), found


def test_type_checking_imports_are_not_counted():
    src = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from duda.engine import trainer\n"
    assert imports_of("duda.models.x", src, False, set()) == []
    src2 = "def f():\n    from duda.engine import trainer\n"
    (imp,) = imports_of("duda.models.x", src2, False, {"duda.engine.trainer"})
    assert imp.in_function and imp.target == "duda.engine.trainer"


MAX_FUNCTION_LINES = 60  # the def line to the last line, docstring included


def long_functions(sources: dict[str, tuple[str, bool]]) -> list[str]:
    out = []
    for mod, (text, _) in sources.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    out.append(f"{mod}:{node.lineno} {node.name}: {length} lines")
    return out


def private_imports(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """``from duda.x import _name`` where duda.x is another module (its private names are its own)."""
    out = []
    for mod, (text, pkg) in sources.items():
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.ImportFrom):
                continue
            target = node.module or ""
            if node.level:
                base = mod.split(".") if pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            if not target.startswith("duda") or target == mod:
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    out.append(f"{mod}:{node.lineno} imports {target}.{alias.name}")
    return out


def test_functions_are_short():
    found = long_functions(all_sources())
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(found)


def test_no_module_imports_another_modules_private_names():
    found = private_imports(all_sources())
    assert not found, "\n".join(found)


def test_the_length_and_privacy_checks_can_fail():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert long_functions({"duda.m": (f"def f():\n{body}\n", False)})
    assert private_imports({"duda.m": ("from duda.models.factory import _build\n", False)})
    assert private_imports({"duda.uda.m": ("from ._checks import _check\n", False)})


def test_tests_mirror_the_packages():
    tests = Path(__file__).resolve().parent
    packages = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file() and p.name != "configs")
    missing = [name for name in packages if not list((tests / name).glob("test_*.py"))]
    assert not missing, f"packages without tests/<package>/test_*.py: {missing}"


def test_nothing_imports_the_deprecated_loading_alias():
    users = [
        str(i)
        for i in all_imports(all_sources())
        if i.target == "duda.loading" and unit(i.module) != "loading"
    ]
    assert not users, users


def test_nothing_imports_the_deprecated_evaluation_inference_alias():
    alias = "duda.evaluation.inference"
    users = [str(i) for i in all_imports(all_sources()) if i.target == alias and i.module != alias]
    assert not users, users
