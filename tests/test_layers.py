"""Layers point one way (STYLE.md): delia's import graph, read from the source with `ast`, has no cycle and no
edge from a lower layer to a higher one; and `delia --help` (`ls`, every `<cmd> --help`) loads no torch.

Edges: every `import` / `from ... import` of a delia module, at module level or inside a function (a deferred
import is still a dependency); importing `a.b.c` also runs `a/__init__` and `a/b/__init__`, so those packages are
edges too (a cycle through a package's re-exports counts). Not edges: imports under `if TYPE_CHECKING:` (never
run) and plug-ins loaded by module name through importlib (`delia.registry.PROVIDERS`, `cli.COMMAND_MODULES`):
that is how a lower layer finds the plug-ins above it without depending on them.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import delia

# The layers, lowest first. A module may import its own layer or lower ones. A module's layer is that of the
# longest entry naming it or a package above it; a module no entry names fails `test_every_module_has_a_layer`
# (place a new module here, deliberately).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # base: configs, registries (the task interface `delia.task` too), errors, files, data formats, models,
    # the generation service, test fixtures
    ("base", ("delia", "delia.config", "delia.registry", "delia.task", "delia.errors", "delia.files",
              "delia.precision", "delia.lengths", "delia.data", "delia.models", "delia.generation",
              "delia.testing")),
    # stages: each stage's package, its `delia <stage>` subcommand module included
    ("stages", ("delia.sampling", "delia.diversify", "delia.mixing", "delia.training", "delia.evaluation")),
    # plug-ins over the stages: tasks (rows, prompts, parsers, metrics) and methods (baselines as recipes)
    ("plug-ins", ("delia.tasks", "delia.methods")),
    # experiments: grids of methods, planned as hashed stage steps; results and reports
    ("experiments", ("delia.experiments", "delia.export")),
    # the command line; `inputs` is the `delia data validate --for USE` table over every stage's input checks
    ("cli", ("delia.cli", "delia.__main__", "delia.inputs")),
]
HEAVY = ("torch", "transformers", "peft", "trl", "datasets")


# ---------------------------------------------------------------- the graph


def module_name(root: Path, path: Path) -> str:
    """`root/delia/a/b.py` -> `delia.a.b`; a package's `__init__.py` is the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[tuple[str, list[str], int, int]]:
    """(module, names, relative level, line) of every import statement outside `if TYPE_CHECKING:` blocks."""
    out: list[tuple[str, list[str], int, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:  # the `else:` branch does run
                    visit_one(stmt)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            out.extend((a.name, [], 0, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", [a.name for a in node.names], node.level, node.lineno))
        visit(node)

    visit(tree)
    return out


def import_graph(package_dir: Path) -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    """The package's import graph: module -> {imported module: line of the first import}, and module -> file.

    Edges to the importing module itself and to the packages above it are left out: those are already
    running when the module runs, so they are no dependency.
    """
    files = {module_name(package_dir, p): p for p in sorted(package_dir.rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges: dict[str, int] = {}

        def add(target: str, line: int) -> None:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                name = ".".join(parts[:i])
                if name in files and name != mod and not mod.startswith(name + "."):
                    edges.setdefault(name, line)

        for target, names, level, line in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if level:  # relative: `from . import x` in package p is `from p import x`
                base = package.split(".")[:len(package.split(".")) - (level - 1)]
                target = ".".join(base + ([target] if target else []))
            add(target, line)
            for name in names:  # `from p import m` imports the submodule p.m when there is one
                if f"{target}.{name}" in files:
                    add(f"{target}.{name}", line)
        graph[mod] = edges
    return graph, files


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None. Iterative DFS (white/grey/black)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state and nxt in graph:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...]]] = LAYERS) -> int | None:
    """Index in `layers` of the longest entry that is `module` or a package above it; None when none is."""
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for i, (_, prefixes) in enumerate(layers):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[0]):
                best = (len(p), i)
    return None if best is None else best[1]


def upward_edges(graph: dict[str, dict[str, int]],
                 layers: list[tuple[str, tuple[str, ...]]] = LAYERS) -> list[tuple[str, str, int]]:
    """(importer, imported, line) for every import of a higher layer (modules without a layer are skipped)."""
    out = []
    for mod, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            lo, hi = layer_of(mod, layers), layer_of(target, layers)
            if lo is not None and hi is not None and hi > lo:
                out.append((mod, target, line))
    return out


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, int]], files: dict[str, Path]) -> str:
    return "import cycle:\n" + "\n".join(f"  {a} -> {b}  ({files[a]}:{graph[a][b]})" for a, b in zip(cycle, cycle[1:]))


@pytest.fixture(scope="module")
def delia_graph() -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    return import_graph(Path(delia.__file__).parent)


# ---------------------------------------------------------------- delia's own graph


def test_no_import_cycle(delia_graph) -> None:
    graph, files = delia_graph
    assert len(graph) > 50  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, describe_cycle(cycle, graph, files)


def test_every_module_has_a_layer(delia_graph) -> None:
    graph, _ = delia_graph
    missing = sorted(m for m in graph if layer_of(m) is None)
    assert not missing, f"modules with no layer (add them to LAYERS in {__file__}): {missing}"


def test_layers_point_down(delia_graph) -> None:
    graph, files = delia_graph
    bad = upward_edges(graph)
    names = [name for name, _ in LAYERS]
    assert not bad, "imports of a higher layer:\n" + "\n".join(
        f"  {files[a]}:{line}: {a} ({names[layer_of(a)]}) imports {b} ({names[layer_of(b)]})" for a, b, line in bad)


# ---------------------------------------------------------------- the checks can fail


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return root / "pkg"


def test_graph_counts_function_imports_and_skips_type_checking(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": """
            from typing import TYPE_CHECKING
            import importlib
            if TYPE_CHECKING:
                from pkg import b          # never run: no edge
            else:
                from pkg import c          # runs: an edge
            def f():
                from .d import thing       # deferred, still an edge (relative)
                importlib.import_module("pkg.e")  # plug-in by name: no edge
            """,
        "pkg/b.py": "", "pkg/c.py": "", "pkg/d.py": "", "pkg/e.py": "",
    })
    graph, _ = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.c": 7, "pkg.d": 9}


def test_cycle_found_and_named(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import x\n",
        "pkg/b.py": "def f():\n    import pkg.c\n",
        "pkg/c.py": "from pkg import a\n",
    })
    graph, files = import_graph(pkg)
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"pkg.a", "pkg.b", "pkg.c"}
    assert "pkg.b -> pkg.c" in describe_cycle(cycle, graph, files)


def test_cycle_through_package_reexport(tmp_path: Path) -> None:
    # low/__init__ re-exports low.impl; high imports low.util (so runs low/__init__); low.impl imports high
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low/__init__.py": "from pkg.low.impl import thing\n",
        "pkg/low/impl.py": "from pkg import high\n",
        "pkg/low/util.py": "",
        "pkg/high.py": "from pkg.low.util import helper\n",
    })
    graph, _ = import_graph(pkg)
    assert "pkg.low" in graph["pkg.high"]
    cycle = find_cycle(graph)
    assert cycle is not None and {"pkg.high", "pkg.low", "pkg.low.impl"} <= set(cycle)
    del graph["pkg.low"]["pkg.low.impl"]  # without the re-export there is none
    assert find_cycle(graph) is None


def test_upward_edge_found() -> None:
    layers = [("base", ("p.base",)), ("stages", ("p.stage",)), ("top", ("p.top",))]
    graph = {"p.base.x": {"p.stage.y": 3}, "p.stage.y": {"p.base.x": 1, "p.stage.z": 2}, "p.stage.z": {},
             "p.top": {"p.stage.y": 5, "p.base.x": 6}}
    assert find_cycle(graph) == ["p.base.x", "p.stage.y", "p.base.x"]
    assert upward_edges(graph, layers) == [("p.base.x", "p.stage.y", 3)]
    assert layer_of("p.stage.y.deep", layers) == 1 and layer_of("p.stagecoach", layers) is None
    # the longest entry wins: a module placed apart from its package
    assert layer_of("delia.inputs") == 4 and layer_of("delia.data.io") == 0 and layer_of("delia") == 0


# ---------------------------------------------------------------- `delia --help` stays light

_PROBE = """
import json, sys
import typer
from delia import cli

def commands(cmd, path):
    yield path
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):  # a group (typer vendors click)
        yield from commands(sub, path + [name])

calls = [["--help"], ["ls"]] + [p + ["--help"] for p in commands(typer.main.get_command(cli.app), [])]
heavy = {}
for argv in calls:
    sys.argv = ["delia", *argv]
    try:
        cli.main()
    except SystemExit as e:
        assert e.code in (0, None), (argv, e.code)
    for m in %r:
        if m in sys.modules:
            heavy.setdefault(m, " ".join(argv))
print(json.dumps({"calls": len(calls), "heavy": heavy}))
""" % (HEAVY,)


def test_help_imports_no_torch() -> None:
    """`delia --help`, `delia ls` and `delia <cmd> --help` for every command import none of HEAVY."""
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["calls"] > 10  # every subcommand was asked for its help
    assert result["heavy"] == {}, f"heavy modules imported (module: first command that loaded it): {result['heavy']}"
