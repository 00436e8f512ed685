"""House rules read from the tree.

(a) no function over 60 lines outside tests/;
(b) no `sys.path` edits in code outside tests/ or in notebooks (the packages are installed by
    requirements.txt);
(c) no import of Hydra's private `hydra._internal`;
(d) the import graph of the project's packages has no circles, and its arrows follow the layering
    table `MAY_IMPORT`: the model (`LAYERS`' "model" row) loads no accelerator, directly or through
    other modules; the rest of the library reaches the accelerators only through the dispatch
    module; the library never imports the run-management package or the experiments.

Each rule is a small AST check, first shown to catch a hand-made offender, then run over every
Python file and notebook of the repository (tracked, or new and not ignored by git).
`python3 tests/test_house.py` prints the import graph: floors, circles, arrows against the table.
"""

from __future__ import annotations

import ast
import json
import subprocess
import textwrap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60
PATH_MUTATORS = {"insert", "append", "extend", "remove", "pop", "clear", "__setitem__"}


def repo_files(suffix: str) -> list[Path]:
    """Files ending in `suffix` that git tracks or would track (untracked, not ignored)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", f"*{suffix}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        skip = {".git", ".venv", "build", "dist", "__pycache__", ".ipynb_checkpoints"}
        return sorted(
            p for p in ROOT.rglob(f"*{suffix}") if not skip & set(p.relative_to(ROOT).parts)
        )
    return sorted(ROOT / line for line in out.splitlines() if (ROOT / line).is_file())


def outside_tests(path: Path) -> bool:
    return path.relative_to(ROOT).parts[0] != "tests"


def notebook_source(path: Path) -> str:
    """The code cells of a notebook as one Python source (IPython magics and shell lines blanked,
    so line numbers stay those of the cells joined)."""
    cells = json.loads(path.read_text())["cells"]
    lines: list[str] = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        for line in src.splitlines():
            lines.append("" if line.lstrip().startswith(("%", "!")) else line)
    return "\n".join(lines) + "\n"


def long_functions(source: str, limit: int = MAX_LINES) -> Iterator[tuple[int, str, int]]:
    """(line, name, length) of each function or method longer than `limit` lines (from its
    `def` line to its last line, docstring and nested functions included)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                yield node.lineno, node.name, length


def _is_sys_path(node: ast.AST, aliases: set[str]) -> bool:
    """`sys.path`, with `sys` under any name it was imported as."""
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id in aliases
    )


def sys_path_edits(source: str) -> Iterator[int]:
    """Lines that change sys.path: a mutating method call on it, assigning or augmenting it or
    an item of it, `from sys import path`, or site.addsitedir."""
    tree = ast.parse(source)
    aliases = {"sys"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name == "sys"}
        if isinstance(node, ast.ImportFrom) and node.module == "sys":
            if any(a.name == "path" for a in node.names):
                yield node.lineno
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            if node.func.attr in PATH_MUTATORS and _is_sys_path(target, aliases):
                yield node.lineno
            if node.func.attr == "addsitedir":
                yield node.lineno
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Subscript):
                target = target.value
            if _is_sys_path(target, aliases):
                yield node.lineno


def private_hydra_imports(source: str) -> Iterator[int]:
    """Lines importing hydra._internal (import statements or importlib.import_module)."""
    private = "hydra._internal"
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] if node.level == 0 else []
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                names = [str(arg.value)]
        if any(n == private or n.startswith(private + ".") for n in names):
            yield node.lineno


def local_conftest_imports(source: str) -> Iterator[int]:
    """Lines importing `conftest` inside a function or class: there `conftest` is whichever
    test folder's conftest pytest imported first, not the test file's own."""
    tree = ast.parse(source)
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module]
            if isinstance(node, ast.ImportFrom)
            else []
        )
        if "conftest" in names and id(node) not in top:
            yield node.lineno


def _sources(paths: list[Path]) -> Iterator[tuple[Path, str]]:
    for path in paths:
        text = notebook_source(path) if path.suffix == ".ipynb" else path.read_text()
        yield path.relative_to(ROOT), text


# ---------------------------------------------------------------- the checks catch offenders


def test_checks_catch_hand_made_offenders():
    body = "".join(f"    x{i} = {i}\n" for i in range(58))
    at_limit = f"def ok():\n    '''doc'''\n{body}"  # 60 lines
    over = f"def too_long():\n    '''doc'''\n{body}    return x0\n"  # 61 lines
    assert list(long_functions(at_limit)) == []
    method = "class A:\n" + textwrap.indent(over, "    ")
    assert list(long_functions(method)) == [(2, "too_long", 61)]
    edits = (
        "import sys\nimport sys as s\nfrom sys import path\nimport site\n"
        "sys.path.insert(0, 'a')\ns.path.append('b')\nsys.path[0:0] = ['c']\n"
        "sys.path += ['d']\nsys.path = ['e']\nsite.addsitedir('f')\nprint(sys.path)\n"
        "x = [p for p in sys.path]\n"
    )
    assert sorted(set(sys_path_edits(edits))) == [3, 5, 6, 7, 8, 9, 10]
    private = (
        "import hydra._internal.utils\nfrom hydra._internal.core_plugins import x\n"
        "import importlib\nimportlib.import_module('hydra._internal.hydra')\n"
        "from hydra.core.utils import JobReturn\nimport hydra_internal\n"
    )
    assert sorted(private_hydra_imports(private)) == [1, 2, 4]
    conftests = (
        "from conftest import A\nimport conftest\ndef f():\n    from conftest import B\n"
        "class C:\n    import conftest\nif True:\n    from conftest import D\n"
    )
    assert sorted(local_conftest_imports(conftests)) == [4, 6, 8]


def test_notebook_source_keeps_code_cells_only(tmp_path):
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": ["sys.path.insert(0, 'x')\n"]},
            {"cell_type": "code", "source": ["%matplotlib inline\n", "import sys\n"]},
            {"cell_type": "code", "source": "sys.path.append('y')"},
        ]
    }
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    assert list(sys_path_edits(notebook_source(path))) == [3]


# ---------------------------------------------------------------- the tree


def test_repository_files_are_found():
    py = repo_files(".py")
    assert ROOT / "sgtheory" / "spikes.py" in py and ROOT / "tests" / "test_house.py" in py
    assert any(p.suffix == ".ipynb" for p in repo_files(".ipynb"))


def test_no_function_over_60_lines_outside_tests():
    offenders = [
        f"{path}:{line} {name} ({length} lines)"
        for path, text in _sources([p for p in repo_files(".py") if outside_tests(p)])
        for line, name, length in long_functions(text)
    ]
    assert not offenders, f"functions over {MAX_LINES} lines:\n" + "\n".join(offenders)


def test_no_sys_path_edits_outside_tests():
    paths = [p for p in repo_files(".py") + repo_files(".ipynb") if outside_tests(p)]
    offenders = [
        f"{path}:{line}" for path, text in _sources(paths) for line in sys_path_edits(text)
    ]
    assert not offenders, "sys.path edits (import the installed packages):\n" + "\n".join(offenders)


def test_tests_import_conftest_at_module_level_only():
    paths = [p for p in repo_files(".py") if not outside_tests(p)]
    offenders = [
        f"{path}:{line}" for path, text in _sources(paths) for line in local_conftest_imports(text)
    ]
    assert not offenders, "import conftest at the top of the test file:\n" + "\n".join(offenders)


@pytest.mark.parametrize("suffix", [".py", ".ipynb"])
def test_no_private_hydra_imports(suffix):
    offenders = [
        f"{path}:{line}"
        for path, text in _sources(repo_files(suffix))
        for line in private_hydra_imports(text)
    ]
    assert not offenders, "hydra._internal imports (use Hydra's public API):\n" + "\n".join(
        offenders
    )


# ---------------------------------------------------------------- the import graph
#
# Nodes: every module of the project's packages (`PACKAGES`) and every other Python file outside
# tests/ (entry scripts, collect.py, benchmarks), the latter named by their path. Edges: every
# import statement anywhere in a file (module level, inside functions, under `if TYPE_CHECKING:`)
# and `importlib.import_module("...")` with a literal name, resolved to the most specific module
# of the graph (`from pkg import sub` is an edge to pkg.sub when that is a module; relative
# imports resolved against the importer). TYPE_CHECKING imports do not run, but they are
# dependencies a reader follows, and a circle through one is still a circle in the design.
# `import a.b.c` also runs a/__init__ and a/b/__init__; those implicit edges are left out of
# the graph (a package importing its own submodules would otherwise be a circle), and taken into
# account where it matters: what loading a model module runs (`model_loads_backend`).

PACKAGES: dict[str, Path] = {
    "sgtheory": ROOT / "sgtheory",
    "sgruns": ROOT / "sgruns",
    "convsnn": ROOT / "Classification" / "convsnn",
    "stm": ROOT / "Spike_train_matching" / "stm",
    "sigmoid_net": ROOT / "Sigmoid_network" / "sigmoid_net.py",
}

# Which layer a module belongs to: the first row with a name equal to the module or to a package
# above it (so sgtheory.spikes is "model" before "library" takes the rest of sgtheory). Any
# other file is a script.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model", ("sgtheory.spikes", "sgtheory.lif", "sgtheory.random", "sgtheory.errors")),
    ("dispatch", ("sgtheory.scan", "sgtheory.dispatch")),
    ("backends", ("sgtheory.backends",)),
    ("library", ("sgtheory",)),
    ("runs", ("sgruns",)),
    ("convsnn", ("convsnn",)),
    ("stm", ("stm",)),
    ("sigmoid_net", ("sigmoid_net",)),
)
SCRIPTS = "scripts"

# The layering: which layers a module of each layer may import (arrows point down the house).
# The model stands alone; accelerators build on the model; the dispatch chooses among them; the
# rest of the library reaches them only through the dispatch; running experiments and the
# experiments sit on top, each experiment on its own.
_BELOW_EXPERIMENTS = {"model", "backends", "dispatch", "library", "runs"}
MAY_IMPORT: dict[str, set[str]] = {
    "model": {"model"},
    "backends": {"model", "backends"},
    "dispatch": {"model", "backends", "dispatch"},
    "library": {"model", "dispatch", "library"},
    "runs": {"model", "backends", "dispatch", "library", "runs"},
    "convsnn": _BELOW_EXPERIMENTS | {"convsnn"},
    "stm": _BELOW_EXPERIMENTS | {"stm"},
    "sigmoid_net": _BELOW_EXPERIMENTS | {"sigmoid_net"},
    SCRIPTS: {name for name, _ in LAYERS} | {SCRIPTS},
}


@dataclass(frozen=True)
class RawImport:
    """One imported name as written: `module` (None for `from . import x`), the names after
    `import` in a from-import, the relative level, the line and where it stands."""

    module: str | None
    names: tuple[str, ...]
    level: int
    line: int
    context: str  # "", "in a function", "under TYPE_CHECKING"


def _is_type_checking(test: ast.expr) -> bool:
    """`TYPE_CHECKING` or `typing.TYPE_CHECKING` (any module prefix)."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


class _ImportFinder(ast.NodeVisitor):
    """Every import of a file, wherever it stands, with its context."""

    def __init__(self) -> None:
        self.found: list[RawImport] = []
        self.context: list[str] = []

    def _add(self, module: str | None, names: tuple[str, ...], level: int, line: int) -> None:
        where = self.context[-1] if self.context else ""
        self.found.append(RawImport(module, names, level, line, where))

    def _inside(self, label: str, nodes: list[ast.AST]) -> None:
        self.context.append(label)
        for node in nodes:
            self.visit(node)
        self.context.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._inside("in a function", [*node.decorator_list, *node.body])

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._inside("under TYPE_CHECKING", node.body)
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, (), 0, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._add(node.module, tuple(a.name for a in node.names), node.level, node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        arg = node.args[0] if node.args else None
        if name in ("import_module", "__import__") and isinstance(arg, ast.Constant):
            if isinstance(arg.value, str) and not arg.value.startswith("."):
                self._add(arg.value, (), 0, node.lineno)
        self.generic_visit(node)


def find_imports(source: str) -> list[RawImport]:
    """Every import in `source`: statements anywhere and import_module calls with a literal."""
    finder = _ImportFinder()
    finder.visit(ast.parse(source))
    return finder.found


@dataclass(repr=False)
class ImportGraph:
    """Modules (dotted names; scripts by their path) and, per arrow, where it is written."""

    files: dict[str, Path]
    packages: set[str]  # nodes that are packages (their file is __init__.py)
    edges: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"ImportGraph({len(self.files)} modules, {sum(map(len, self.edges.values()))} arrows)"
        )

    def arrows(self) -> Iterator[tuple[str, str, list[str]]]:
        """(source, target, where written) for every arrow, sorted."""
        for source, targets in sorted(self.edges.items()):
            for target, where in sorted(targets.items()):
                yield source, target, where


def module_files(packages: dict[str, Path]) -> tuple[dict[str, Path], set[str]]:
    """Module name -> file for every module of `packages` (name -> package folder or single
    module file); and the names that are packages."""
    files: dict[str, Path] = {}
    pkgs: set[str] = set()
    for name, path in packages.items():
        if path.is_file():
            files[name] = path
            continue
        for file in sorted(path.rglob("*.py")):
            parts = file.relative_to(path).with_suffix("").parts
            if "__pycache__" in parts or not all(p.isidentifier() for p in parts):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
                pkgs.add(".".join((name, *parts)))
            files[".".join((name, *parts))] = file
    return files, pkgs


def _known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    """The longest dotted prefix of `name` (itself included) that is a module of the graph."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def _resolve(raw: RawImport, importer: str, graph: ImportGraph) -> list[str]:
    """The graph's modules one import refers to (none for an outside package)."""
    modules = graph.files
    if raw.level:
        if importer.endswith(".py"):
            return []  # a script has no package to be relative to
        base = importer.split(".")
        if importer not in graph.packages:
            base = base[:-1]
        base = base[: len(base) - (raw.level - 1)]
        module = ".".join(base + ([raw.module] if raw.module else []))
    else:
        module = raw.module or ""
        script = graph.files.get(importer)
        if importer.endswith(".py") and script is not None:  # a script's folder is on sys.path
            sibling = script.parent / (module.split(".")[0] + ".py")
            node = next((n for n, f in modules.items() if f == sibling and n.endswith(".py")), None)
            if node is not None:
                return [node]
    targets = [f"{module}.{n}" for n in raw.names if f"{module}.{n}" in modules]
    if len(targets) < len(raw.names) or not raw.names:
        prefix = _known_prefix(module, modules)
        targets += [prefix] if prefix is not None else []
    return targets


def import_graph(packages: dict[str, Path], scripts: Iterable[Path], root: Path) -> ImportGraph:
    """The import graph of `packages` (see `module_files`) and of `scripts` (by path from
    `root`)."""
    files, pkgs = module_files(packages)
    for script in scripts:
        files[script.relative_to(root).as_posix()] = script
    graph = ImportGraph(files, pkgs)
    for node, file in files.items():
        where = file.relative_to(root).as_posix()
        for raw in find_imports(file.read_text()):
            for target in _resolve(raw, node, graph):
                if target == node:
                    continue
                note = f"{where}:{raw.line}" + (f" ({raw.context})" if raw.context else "")
                graph.edges.setdefault(node, {}).setdefault(target, []).append(note)
    return graph


def layer_of(module: str) -> str:
    """The module's row of `LAYERS`; scripts (named by their path) are `SCRIPTS`."""
    for layer, names in LAYERS:
        if any(module == n or module.startswith(n + ".") for n in names):
            return layer
    return SCRIPTS


def strong_components(graph: ImportGraph) -> list[list[str]]:
    """Tarjan's strongly connected components, each sorted, in reverse topological order
    (a component comes after every component it imports)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.edges.get(node, {})):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            out.append(sorted(component))

    for node in sorted(graph.files):
        if node not in index:
            visit(node)
    return out


def circles(graph: ImportGraph) -> list[list[str]]:
    """The import circles: each strongly connected component of more than one module."""
    return sorted(c for c in strong_components(graph) if len(c) > 1)


def _shortest_path(
    graph: ImportGraph, start: str, goal: Callable[[str], bool], parents: bool = False
) -> list[str] | None:
    """Shortest chain of imports from `start` to a module for which `goal` holds (excluding
    `start` itself); with `parents`, loading a module also loads the packages above it."""
    came_from: dict[str, str] = {}
    queue = [start]
    for node in queue:
        nexts = sorted(graph.edges.get(node, {}))
        if parents and "." in node and not node.endswith(".py"):
            parent = node.rsplit(".", 1)[0]
            nexts += [parent] if parent in graph.files else []
        for target in nexts:
            if target in came_from or target == start:
                continue
            came_from[target] = node
            if goal(target):
                chain = [target]
                while chain[-1] != start:
                    chain.append(came_from[chain[-1]])
                return chain[::-1]
            queue.append(target)
    return None


def describe_chain(graph: ImportGraph, chain: list[str]) -> str:
    """`a -> b -> c`, each arrow with the first place it is written ('its package' where the
    step is a package loaded above its module)."""
    steps = [chain[0]]
    for source, target in zip(chain, chain[1:]):
        where = graph.edges.get(source, {}).get(target)
        steps.append(f"-> {target} [{where[0] if where else 'its package'}]")
    return " ".join(steps)


def describe_circle(graph: ImportGraph, members: list[str]) -> str:
    """A circle as one shortest closed chain through its first member, plus its size."""
    inside = set(members)
    sub = ImportGraph(
        graph.files,
        graph.packages,
        {
            s: {t: w for t, w in ts.items() if t in inside}
            for s, ts in graph.edges.items()
            if s in inside
        },
    )
    chain = _shortest_path(sub, members[0], lambda n: members[0] in sub.edges.get(n, {}))
    loop = (chain or [members[0]]) + [members[0]]
    size = f"circle of {len(members)} ({', '.join(members)}): " if len(loop) <= len(members) else ""
    return size + describe_chain(graph, loop)


def arrows_against_layers(graph: ImportGraph) -> list[tuple[str, str, list[str]]]:
    """Each import (source, target, where written) whose direction `MAY_IMPORT` does not allow."""
    return [
        (source, target, where)
        for source, target, where in graph.arrows()
        if layer_of(target) not in MAY_IMPORT[layer_of(source)]
    ]


def model_loads_backend(graph: ImportGraph) -> dict[str, list[str]]:
    """For each model module that loads an accelerator or the dispatch when imported (through any
    chain of imports, the packages above each module included), the shortest such chain."""
    out = {}
    for module in sorted(graph.files):
        if layer_of(module) == "model":
            chain = _shortest_path(
                graph, module, lambda n: layer_of(n) in ("backends", "dispatch"), parents=True
            )
            if chain is not None:
                out[module] = chain
    return out


def floors(graph: ImportGraph) -> dict[str, int]:
    """Each module's floor: the length of the longest chain of imports below it (0: imports no
    module of the graph). The modules of a circle share one floor."""
    components = strong_components(graph)
    component_of = {m: i for i, c in enumerate(components) for m in c}
    floor_of: dict[int, int] = {}
    for i, component in enumerate(components):  # every component it imports comes earlier
        below = {component_of[t] for m in component for t in graph.edges.get(m, {})} - {i}
        floor_of[i] = 1 + max((floor_of[j] for j in below), default=-1)
    return {m: floor_of[component_of[m]] for m in graph.files}


def house_report(graph: ImportGraph) -> str:
    """The import graph in words: floors (modules per floor, with their layer), circles, and the
    arrows against the layering table."""
    floor = floors(graph)
    modules = [m for m in graph.files if layer_of(m) != SCRIPTS]
    tops = {}
    for m in sorted(modules, key=lambda m: (floor[m], m)):
        tops[m.split(".")[0]] = m
    lines = [
        f"{len(modules)} modules of {len(tops)} packages and {len(graph.files) - len(modules)} "
        f"scripts on {max(floor.values(), default=-1) + 1} floors; the highest floor of each "
        "package: " + ", ".join(f"{p} {floor[m]} ({m})" for p, m in sorted(tops.items()))
    ]
    for level in range(max(floor.values(), default=-1) + 1):
        names = sorted(m for m in graph.files if floor[m] == level)
        lines.append(f"floor {level}: " + ", ".join(f"{m} ({layer_of(m)})" for m in names))
    found = circles(graph)
    lines.append(f"{len(found)} circles" + (":" if found else ""))
    lines += [f"  {describe_circle(graph, c)}" for c in found]
    against = arrows_against_layers(graph)
    lines.append(f"{len(against)} arrows against the layering table" + (":" if against else ""))
    lines += [
        f"  {s} ({layer_of(s)}) -> {t} ({layer_of(t)}): {', '.join(w)}" for s, t, w in against
    ]
    loads = model_loads_backend(graph)
    lines.append(f"{len(loads)} model modules loading an accelerator" + (":" if loads else ""))
    lines += [f"  {describe_chain(graph, chain)}" for chain in loads.values()]
    return "\n".join(lines)


def tree_graph() -> ImportGraph:
    """The repository's import graph: `PACKAGES` plus every other Python file outside tests/."""
    inside = [p for p in PACKAGES.values()]
    scripts = [
        p
        for p in repo_files(".py")
        if outside_tests(p) and not any(p == q or q in p.parents for q in inside)
    ]
    return import_graph(PACKAGES, scripts, ROOT)


# ---------------------------------------------------------------- the graph checks catch offenders


def plant(root: Path, files: dict[str, str]) -> Path:
    """Write `files` (path under `root` -> source) and return `root`."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def planted_graph(root: Path, files: dict[str, str], packages: list[str]) -> ImportGraph:
    """The import graph of a tree planted under `root`: `packages` are folders (or `name.py`
    files) at its top, every other top-level .py file a script."""
    plant(root, files)
    pkgs = {p.removesuffix(".py"): root / p for p in packages}
    scripts = [p for p in sorted(root.glob("*.py")) if p.name not in packages]
    return import_graph(pkgs, scripts, root)


def test_import_finder_sees_imports_wherever_they_stand():
    source = textwrap.dedent(
        """
        import os, a.b as ab
        from typing import TYPE_CHECKING
        import typing
        from . import c
        from ..d import e, f
        if TYPE_CHECKING:
            from g import G
        if typing.TYPE_CHECKING:
            import h
        else:
            import i
        def load():
            import j
            return importlib.import_module("k.l")
        class K:
            async def m(self):
                from n import o
        """
    )
    found = {(r.module, r.names, r.level, r.context) for r in find_imports(source)}
    fn, tc = "in a function", "under TYPE_CHECKING"
    assert found == {
        ("os", (), 0, ""),
        ("a.b", (), 0, ""),
        ("typing", ("TYPE_CHECKING",), 0, ""),
        ("typing", (), 0, ""),
        (None, ("c",), 1, ""),
        ("d", ("e", "f"), 2, ""),
        ("g", ("G",), 0, tc),
        ("h", (), 0, tc),
        ("i", (), 0, ""),
        ("j", (), 0, fn),
        ("k.l", (), 0, fn),
        ("n", ("o",), 0, fn),
    }


CIRCLES = {
    "pkg/__init__.py": "from pkg import a  # a package importing its own modules: no circle\n",
    "pkg/a.py": "import pkg.b\n",
    "pkg/b.py": "from . import a\n",
    "pkg/c.py": "from pkg.d import f\n",
    "pkg/d.py": """
        def f():
            from pkg import c
        """,
    "pkg/e.py": """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from pkg.f import F
        """,
    "pkg/f.py": "from pkg.e import x\n",
    "pkg/sub/__init__.py": "",
    "pkg/sub/g.py": "from ..h import y\n",
    "pkg/h.py": """
        import importlib
        def load():
            return importlib.import_module("pkg.sub.g")
        """,
    "pkg/ok.py": "import os\nimport pkg\nfrom pkg import a, sub\nfrom pkg.sub import g\n",
    "run.py": "import pkg.ok\nimport helper\n",
    "helper.py": "def f():\n    import run\n",
}


def test_circle_check_catches_planted_circles(tmp_path):
    graph = planted_graph(tmp_path, CIRCLES, ["pkg"])
    assert circles(graph) == [
        ["helper.py", "run.py"],  # scripts: a script's folder is on sys.path
        ["pkg.a", "pkg.b"],  # module level, relative
        ["pkg.c", "pkg.d"],  # one side inside a function
        ["pkg.e", "pkg.f"],  # one side under TYPE_CHECKING
        ["pkg.h", "pkg.sub.g"],  # import_module inside a function; `from ..h`
    ]
    described = describe_circle(graph, ["pkg.c", "pkg.d"])
    assert described == ("pkg.c -> pkg.d [pkg/c.py:1] -> pkg.c [pkg/d.py:3 (in a function)]"), (
        described
    )
    # the same tree without the arrows back: no circle
    broken = {**CIRCLES, "pkg/b.py": "", "pkg/d.py": "", "pkg/f.py": "", "pkg/h.py": ""}
    broken["helper.py"] = ""
    assert circles(planted_graph(tmp_path / "broken", broken, ["pkg"])) == []


def test_circle_description_names_every_member(tmp_path):
    files = {
        "p/__init__.py": "",
        "p/a.py": "from p import b\n",
        "p/b.py": "from p import c, a\n",
        "p/c.py": "from p import a\n",
    }
    graph = planted_graph(tmp_path, files, ["p"])
    assert circles(graph) == [["p.a", "p.b", "p.c"]]
    assert describe_circle(graph, ["p.a", "p.b", "p.c"]) == (
        "circle of 3 (p.a, p.b, p.c): p.a -> p.b [p/a.py:1] -> p.a [p/b.py:1]"
    )


LAYERED = {
    "sgtheory/__init__.py": "",
    "sgtheory/errors.py": "",
    "sgtheory/random.py": "from sgtheory.errors import E\n",
    "sgtheory/spikes.py": """
        from sgtheory import random
        def fast():
            from sgtheory.backends.native import fused
        """,
    "sgtheory/lif.py": "from sgtheory.spikes import S\nfrom sgtheory import stats\n",
    "sgtheory/stats.py": "from sgtheory.backends.threads import n\n",
    "sgtheory/scan.py": "from sgtheory.backends.native import fused\nfrom sgtheory.lif import L\n",
    "sgtheory/layers.py": "from sgtheory.scan import s\nfrom sgtheory.backends.conv import algos\n",
    "sgtheory/files.py": "def f():\n    import sgruns.folder\n",
    "sgtheory/data.py": "from convsnn import settings\n",
    "sgtheory/backends/__init__.py": "",
    "sgtheory/backends/threads.py": "",
    "sgtheory/backends/native/__init__.py": "",
    "sgtheory/backends/native/fused.py": "from sgtheory import random\nfrom sgtheory.lif import L",
    "sgtheory/backends/conv/__init__.py": "",
    "sgtheory/backends/conv/algos.py": "from ..native import fused\nfrom sgtheory.errors import E",
    "sgruns/__init__.py": "",
    "sgruns/folder.py": "from sgtheory.backends.threads import n\nfrom sgtheory.files import w\n",
    "convsnn/__init__.py": "",
    "convsnn/settings.py": "from sgruns.folder import R\nfrom sgtheory.layers import L\nimport stm",
    "stm/__init__.py": "from sgtheory.scan import scan\n",
    "run.py": "from convsnn import settings\nimport stm\nfrom sgtheory.backends.native import f",
}
LAYERED_PACKAGES = ["sgtheory", "sgruns", "convsnn", "stm"]


def test_layering_check_catches_planted_arrows(tmp_path):
    graph = planted_graph(tmp_path, LAYERED, LAYERED_PACKAGES)
    found = {(s, t): w for s, t, w in arrows_against_layers(graph)}
    assert set(found) == {
        ("sgtheory.spikes", "sgtheory.backends.native.fused"),  # model -> accelerator
        ("sgtheory.lif", "sgtheory.stats"),  # model -> rest of the library
        ("sgtheory.stats", "sgtheory.backends.threads"),  # library -> accelerator, not dispatch
        ("sgtheory.layers", "sgtheory.backends.conv.algos"),  # library -> accelerator
        ("sgtheory.files", "sgruns.folder"),  # library -> running experiments
        ("sgtheory.data", "convsnn.settings"),  # library -> an experiment
        ("convsnn.settings", "stm"),  # one experiment -> another
    }
    assert found[("sgtheory.spikes", "sgtheory.backends.native.fused")] == [
        "sgtheory/spikes.py:4 (in a function)"
    ]


def test_model_check_catches_chains_through_other_modules(tmp_path):
    files = {
        "sgtheory/__init__.py": "",
        "sgtheory/errors.py": "",
        "sgtheory/random.py": "from sgtheory import errors\n",
        "sgtheory/spikes.py": "from sgtheory.random import u\n",
        "sgtheory/lif.py": "from sgtheory import stats\n",
        "sgtheory/stats.py": "def f():\n    import sgtheory.backends.threads\n",
        "sgtheory/backends/__init__.py": "",
        "sgtheory/backends/threads.py": "from sgtheory.lif import x\n",
    }
    graph = planted_graph(tmp_path, files, ["sgtheory"])
    assert model_loads_backend(graph) == {
        "sgtheory.lif": ["sgtheory.lif", "sgtheory.stats", "sgtheory.backends.threads"]
    }
    assert describe_chain(graph, model_loads_backend(graph)["sgtheory.lif"]) == (
        "sgtheory.lif -> sgtheory.stats [sgtheory/lif.py:1] -> sgtheory.backends.threads "
        "[sgtheory/stats.py:2 (in a function)]"
    )


def test_model_check_catches_chains_through_a_package_init(tmp_path):
    files = {
        "sgtheory/__init__.py": "from sgtheory.layers import Net\n",
        "sgtheory/errors.py": "",
        "sgtheory/spikes.py": "x = 1\n",
        "sgtheory/layers.py": "from sgtheory.scan import scan\n",
        "sgtheory/scan.py": "",
    }
    graph = planted_graph(tmp_path, files, ["sgtheory"])
    assert arrows_against_layers(graph) == []
    chains = model_loads_backend(graph)
    assert set(chains) == {"sgtheory.errors", "sgtheory.spikes"}
    assert chains["sgtheory.spikes"] == [
        "sgtheory.spikes",
        "sgtheory",
        "sgtheory.layers",
        "sgtheory.scan",
    ]


def test_floors_count_the_longest_chain_below(tmp_path):
    files = {
        "p/__init__.py": "",
        "p/base.py": "import os\n",
        "p/a.py": "from p import base\n",
        "p/b.py": "from p import a, c\n",
        "p/c.py": "from p import b, base\n",  # b and c: one circle, one floor
        "p/top.py": "from p import b\nfrom p import base\n",
        "main.py": "import p.top\n",
    }
    graph = planted_graph(tmp_path, files, ["p"])
    assert floors(graph) == {
        "p": 0,
        "p.base": 0,
        "p.a": 1,
        "p.b": 2,
        "p.c": 2,
        "p.top": 3,
        "main.py": 4,
    }
    report = house_report(graph)
    assert "on 5 floors" in report
    assert "floor 2: p.b (scripts), p.c (scripts)" in report  # p is in no row of LAYERS
    assert "1 circles:" in report and "0 arrows against the layering table" in report


def test_layering_table_names_every_layer():
    layers = [name for name, _ in LAYERS] + [SCRIPTS]
    assert set(MAY_IMPORT) == set(layers)
    assert all(allowed <= set(layers) and layer in allowed for layer, allowed in MAY_IMPORT.items())
    assert {name.split(".")[0] for _, names in LAYERS for name in names} == set(PACKAGES)


# ---------------------------------------------------------------- the tree's import graph


@pytest.fixture(scope="module")
def tree() -> ImportGraph:
    return tree_graph()


def test_graph_covers_the_packages(tree):
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    first_party = config["tool"]["ruff"]["lint"]["isort"]["known-first-party"]
    assert set(PACKAGES) == set(first_party)
    assert all(path.exists() for path in PACKAGES.values())
    assert "sgruns.sweeps.folders" in tree.edges["sgruns.sweeps.summary"]
    assert "sgruns.sweeps" in tree.edges["Classification/collect.py"]
    assert tree.edges["sgruns.sweeps"].keys() >= {
        "sgruns.sweeps.figures",
        "sgruns.sweeps.folders",
        "sgruns.sweeps.launch",
        "sgruns.sweeps.summary",
    }


def test_model_and_dispatch_modules_exist(tree):
    """The layering rows name modules that exist, so the checks below cannot pass vacuously."""
    rows = dict(LAYERS)
    missing = [m for m in rows["model"] if m not in tree.files]
    assert not missing, f"model modules named in LAYERS but not in the tree: {missing}"
    assert any(m in tree.files for m in rows["dispatch"]), rows["dispatch"]


def test_no_import_circles(tree):
    found = [describe_circle(tree, c) for c in circles(tree)]
    assert not found, "import circles:\n" + "\n".join(found)


def test_imports_follow_the_layering_table(tree):
    found = [
        f"{s} ({layer_of(s)}) -> {t} ({layer_of(t)}): {', '.join(w)}"
        for s, t, w in arrows_against_layers(tree)
    ]
    assert not found, "imports against MAY_IMPORT:\n" + "\n".join(found)


def test_model_modules_load_no_accelerator(tree):
    found = [describe_chain(tree, chain) for chain in model_loads_backend(tree).values()]
    assert not found, "model modules loading an accelerator:\n" + "\n".join(found)


if __name__ == "__main__":
    print(house_report(tree_graph()))
