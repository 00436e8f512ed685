"""House rules read from the tree (see /work/shared conventions and issue 13):

(a) no function over 60 lines outside tests/;
(b) no `sys.path` edits in code outside tests/ or in notebooks (the packages are installed by
    requirements.txt);
(c) no import of Hydra's private `hydra._internal`.

Each rule is a small AST check, first shown to catch a hand-made offender, then run over every
Python file and notebook of the repository (tracked, or new and not ignored by git).
"""

from __future__ import annotations

import ast
import json
import subprocess
import textwrap
from collections.abc import Iterator
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
    assert ROOT / "sgtheory" / "neurons.py" in py and ROOT / "tests" / "test_house.py" in py
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
