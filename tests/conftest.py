"""Shared fixtures: tiny seeded ONNX models written to tmp dirs, and the edgert CLI as a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def make_matmul_model(path: Path, *, symbolic: bool = True, size: int = 64) -> Path:
    """x[N,size] @ W -> Relu: small enough to measure quickly, big enough to be real work."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    batch = "N" if symbolic else 1
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul"),
         helper.make_node("Relu", ["y"], ["z"], name="relu")],
        "matmul_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, size])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [batch, size])],
        [numpy_helper.from_array(weight, "W")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 shared by the tests that reach agents over SSH."""
    from sshd import sshd_available, start_sshd

    if not sshd_available():
        pytest.skip("needs OpenSSH's sshd (apt-get install openssh-server)")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def matmul_model(tmp_path: Path) -> Path:
    return make_matmul_model(tmp_path / "matmul.onnx")


def run_python(code: str, *args: str, block: tuple[str, ...] = (), cwd: Path | None = None,
               timeout: float = 600, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in which the ``block`` modules cannot be imported."""
    blocker = (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {set(block)!r}:\n"
        "            raise ModuleNotFoundError(f'blocked for the test: {name}')\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    return subprocess.run([sys.executable, "-c", blocker + code, *args], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, "COLUMNS": "200", **(env or {})},
                          timeout=timeout)


def run_cli(*args: str, block: tuple[str, ...] = (), cwd: Path | None = None,
            timeout: float = 600, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run ``edgert ARGS`` in a fresh interpreter; ``block`` makes those modules unimportable."""
    return run_python("from edgert.cli import main\nmain(sys.argv[1:])\n", *args, block=block,
                      cwd=cwd, timeout=timeout, env=env)
