"""The import structure: no circles, and no import from a lower layer to a higher one.

Layers, lowest first: the kernels (``minigrad.kernels``); the engine (``minigrad`` itself: tensor, layers,
the loop, data, ...); the profilers (``minigrad.profiling``); the tools built on them (``minigrad.bench``,
``minigrad.profile``). A module may import its own layer and the layers below it, at module level or inside a
function alike. Circles are checked among module-level imports (what runs when a module is imported).
"""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"minigrad": ROOT / "minigrad", "minigrad.kernels": ROOT / "kernels", "minigrad.profiling": ROOT / "profiling"}
LAYERS = {"minigrad.kernels": 0, "minigrad.profiling": 2, "minigrad.bench": 3, "minigrad.profile": 3}


def layer(module: str) -> int:
    for prefix, level in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return level
    return 1


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if package == "minigrad" and parts and parts[0] in ("kernels", "profiling"):
                continue
            out[".".join([package, *parts])] = path
    return out


def imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(imported minigrad module, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    known = modules()
    top = set(map(id, tree.body))
    found = []

    def add(target, node):
        while target not in known and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in known and target != name:
            found.append((target, id(node) in top))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base, node)
    return found


def test_no_import_from_a_lower_layer_to_a_higher_one():
    bad = [f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
           for name, path in modules().items() for target, _ in imports(name, path) if layer(target) > layer(name)]
    assert not bad, "\n".join(bad)


def test_no_import_circles():
    graph = {name: {t for t, at_top in imports(name, path) if at_top} for name, path in modules().items()}
    circles = []

    def visit(node, stack, done):
        if node in stack:
            circles.append(" -> ".join(stack[stack.index(node):] + [node]))
            return
        if node in done:
            return
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if not nxt.startswith(node + "."):  # a package importing its own submodules is not a circle
                visit(nxt, stack, done)
        stack.pop()
        done.add(node)

    done: set = set()
    for name in sorted(graph):
        visit(name, [], done)
    assert not circles, "\n".join(sorted(set(circles)))


def test_the_checks_see_a_circle_and_a_layer_violation(tmp_path, monkeypatch):
    """The two tests above on a made-up tree with one of each."""
    pkg = tmp_path / "minigrad"
    (pkg / "bench").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\nfrom .bench import tool\n")
    (pkg / "b.py").write_text("from minigrad import a\n")
    (pkg / "bench" / "__init__.py").write_text("")
    (pkg / "bench" / "tool.py").write_text("")
    monkeypatch.setitem(PACKAGES, "minigrad", pkg)
    monkeypatch.setitem(PACKAGES, "minigrad.kernels", tmp_path / "none")
    monkeypatch.setitem(PACKAGES, "minigrad.profiling", tmp_path / "none")
    with pytest.raises(AssertionError, match=re.escape("minigrad.a -> minigrad.b -> minigrad.a")):
        test_no_import_circles()
    with pytest.raises(AssertionError, match=re.escape("minigrad.a (layer 1) imports minigrad.bench.tool (layer 3)")):
        test_no_import_from_a_lower_layer_to_a_higher_one()


def test_import_minigrad_is_light_and_leaves_the_environment_alone():
    code = ("import os, sys; before = dict(os.environ); import minigrad, minigrad.functional, minigrad.nn; "
            "print(dict(os.environ) == before, 'numba' in sys.modules, 'torch' in sys.modules, "
            "'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"})
    assert out.stdout.split() == ["True", "False", "False", "False"], out.stderr


def test_selecting_numba_writes_nothing_of_minigrads_into_os_environ():
    """minigrad writes nothing; its dependency threadpoolctl adds KMP_DUPLICATE_LIB_OK on import (for Intel's
    OpenMP), which machine.user_environment() leaves out of the children it starts."""
    code = ("import os; before = dict(os.environ); import minigrad as mg; mg.set_backend('numba'); "
            "m = mg.models.lenet5(); from minigrad.machine import user_environment; "
            "added = sorted(set(os.environ) - set(before)); "
            "print(','.join(added) or '-', user_environment() == before, mg.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_DUPLICATE_LIB_OK")})
    added, clean, name = out.stdout.split()
    assert set(added.split(",")) - {"-"} <= {"KMP_DUPLICATE_LIB_OK"} and clean == "True" and name == "numba", out.stderr
