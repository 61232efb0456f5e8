"""The floors of ARCHITECTURE.md: import-linter's contracts hold, bite on a violation, cover every
module, and no module import cycle exists (all on edgert laid out as pip installs it)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

pytest.importorskip("importlinter")
sys.path.insert(0, str(REPO / "tools"))

from arm64_board.board import MAPPED, source_tree  # noqa: E402
from lint_imports import lint  # noqa: E402

CONTRACTS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _copy_tree(dest: Path) -> Path:
    """A real copy (no links) of the installed layout, to edit without touching the checkout."""
    package = dest / "edgert"
    skip = shutil.ignore_patterns("__pycache__", "*.onnx", "*.tflite", "*.npz", "*.json")
    shutil.copytree(REPO / "edgert", package, ignore=skip)
    for name, folder in MAPPED.items():
        shutil.copytree(REPO / folder, package / name, ignore=skip)
    return dest


def _graph_report(tree: Path) -> dict:
    """Modules grimp finds under ``tree``, and the strongly connected components of their imports."""
    code = """
import json, sys
import grimp

graph = grimp.build_graph("edgert", cache_dir=None, exclude_type_checking_imports=True)
modules = sorted(graph.modules)
index, low, stack, on_stack, cycles = {}, {}, [], set(), []

def visit(root):  # Tarjan's algorithm, iterative (deep chains stay off the C stack)
    work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
    index[root] = low[root] = len(index); stack.append(root); on_stack.add(root)
    while work:
        node, children = work[-1]
        child = next(children, None)
        if child is not None:
            if child not in index:
                index[child] = low[child] = len(index); stack.append(child); on_stack.add(child)
                work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
            continue
        work.pop()
        if work:
            low[work[-1][0]] = min(low[work[-1][0]], low[node])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop(); on_stack.discard(member); component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

for module in modules:
    if module not in index:
        visit(module)
print(json.dumps({"modules": modules, "cycles": cycles}))
"""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_the_contracts_hold_on_the_installed_layout() -> None:
    done = lint(source_tree(REPO))
    assert done.returncode == 0, done.stdout + done.stderr
    for contract in CONTRACTS:
        assert re.search(re.escape(contract["name"][:40]) + r".*?KEPT", done.stdout, re.S), contract["name"]


@pytest.mark.parametrize("module, line, contract, chain", [
    # core importing the host's compilers
    ("tensors.py", "from edgert.compilers import compile_for\n", "floors",
     "edgert.tensors -> edgert.compilers"),
    # the wire importing the agent above it
    ("device_agents/framing.py", "from edgert.device_agents import store\n", "floors",
     "edgert.device_agents.framing -> edgert.device_agents.store"),
    # a device-side module importing onnx, even lazily inside a function
    ("device_agents/sysfs.py", "def _shape(path):\n    import onnx\n    return onnx.load(path)\n",
     "device-side", "edgert.device_agents.sysfs -> onnx"),
    # the runtime reaching for TVM's compiler
    ("dynamic/runtime.py", "def _compile():\n    from tvm import relax\n    return relax\n",
     "tvm-runtime-only", "edgert.dynamic.runtime -> tvm"),
])
def test_a_deliberate_violation_breaks_its_contract(tmp_path: Path, module: str, line: str,
                                                    contract: str, chain: str) -> None:
    tree = _copy_tree(tmp_path)
    with open(tree / "edgert" / module, "a") as fh:
        fh.write("\n" + line)
    done = lint(tree)
    assert done.returncode == 1, done.stdout + done.stderr
    name = next(c["name"] for c in CONTRACTS if c["id"] == contract)
    assert re.search(re.escape(name[:40]) + r".*?BROKEN", done.stdout, re.S), done.stdout
    assert chain in done.stdout, done.stdout


def test_every_module_sits_on_a_floor_and_none_import_in_a_cycle() -> None:
    report = _graph_report(source_tree(REPO))
    modules = set(report["modules"])
    # the mapped folders are seen as the subpackages pip installs
    assert {"edgert.backends.tvm", "edgert.device_agents.agent", "edgert.compilers.tvm"} <= modules
    floors = [m.strip() for layer in next(c for c in CONTRACTS if c["id"] == "floors")["layers"]
              for m in layer.split(":")]
    reexporting_inits = {"edgert", "edgert.dynamic", "edgert.variants", "edgert.device_agents"}
    outside = sorted(m for m in modules - reexporting_inits
                     if not any(m == f or m.startswith(f + ".") for f in floors))
    assert outside == []
    assert report["cycles"] == []


def test_a_cycle_is_found(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    with open(tree / "edgert" / "stats.py", "a") as fh:
        fh.write("\nfrom edgert import timing  # timing imports stats\n")
    assert ["edgert.stats", "edgert.timing"] in _graph_report(tree)["cycles"]
