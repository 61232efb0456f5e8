"""The wheel installs one top-level package, ``edgert``, holding every module of the checkout."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

MAPPED = {"backends": "edgert/backends", "device_agents": "edgert/device_agents"}  # pyproject package-dir


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """A wheel built from a copy of the checkout (setuptools writes build/ into the source tree)."""
    pytest.importorskip("setuptools")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("edgert", *MAPPED):
        shutil.copytree(REPO / folder, source / folder, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-cache-dir", "-q", "-w", str(work / "dist"), str(source)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = (work / "dist").glob("edgert-*.whl")
    return zipfile.ZipFile(built)


def _checkout_modules() -> set[str]:
    """Every .py file of edgert/, backends/ and device_agents/, named as it is installed."""
    found = set()
    for folder in ("edgert", *MAPPED):
        for path in (REPO / folder).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(REPO / folder).as_posix()
            found.add(f"{MAPPED.get(folder, folder)}/{rel}")
    return found


def test_the_only_top_level_package_is_edgert(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    (dist_info,) = [t for t in tops if t.endswith(".dist-info")]
    assert tops == {"edgert", dist_info}
    assert wheel.read(f"{dist_info}/top_level.txt").decode().split() == ["edgert"]


def test_every_module_of_the_checkout_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    inside = set(wheel.namelist())
    missing = sorted(_checkout_modules() - inside)
    assert missing == []  # a new subpackage must be listed in pyproject's `packages`
    assert "edgert/compilers/tvm.py" in inside and "edgert/backends/tvm.py" in inside


def test_package_data_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    inside = set(wheel.namelist())
    assert "edgert/device_agents/systemd/edgert-agent.service" in inside
    assert {"edgert/zoo/resnet.onnx", "edgert/zoo/resnet.tflite"} <= inside
