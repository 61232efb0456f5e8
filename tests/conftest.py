"""Shared fixtures: tiny seeded ONNX models written to tmp dirs, the edgert CLI as a subprocess,
and private XDG directories for every test (the machine's own are checked to stay untouched)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from agent_env import private_env
from arm64 import BOARD_CACHE

REPO = Path(__file__).resolve().parents[1]


def _machine_dirs() -> list[Path]:
    """edgert's directories in the environment pytest started with (before any test's)."""
    home = Path.home()
    return [Path(os.environ.get(var) or home / default) / "edgert" for var, default in (
        ("XDG_STATE_HOME", ".local/state"), ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config"))]


MACHINE_DIRS = _machine_dirs()
# The emulated arm64 board's root is the one cache tests share with the machine on purpose:
# a cold build downloads ~150 MB; it is keyed by its recipe's hash and built under a lock.
SHARED = {BOARD_CACHE}


def pytest_configure(config: pytest.Config) -> None:
    """Private XDG directories for the whole run too: session- and module-scoped fixtures (a
    zoo compiled once per module, a TVM import) run outside any test's ``private_dirs``, and
    one of them wrote TVM's engine log into the machine's cache."""
    home = Path(tempfile.mkdtemp(prefix="edgert-tests-"))
    os.environ.update(private_env(home))
    os.environ.pop("EDGERT_CACHE", None)
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))


def _snapshot() -> dict[Path, tuple[int, int]]:
    """Every file and directory under MACHINE_DIRS (except SHARED) with its size and mtime."""
    found = {}
    for top in MACHINE_DIRS:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in SHARED]
            for name in [*dirnames, *filenames]:
                path = Path(dirpath, name)
                if path not in SHARED:
                    st = path.lstat()
                    found[path] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.fixture(scope="session", autouse=True)
def machine_dirs_untouched():
    """Fail the run when a test wrote into the machine's own state, data, cache or config."""
    before = _snapshot()
    yield
    after = _snapshot()
    changed = sorted(str(p) for p in after.keys() | before.keys() if after.get(p) != before.get(p))
    if changed:
        # a snapshot cannot say which process wrote: an edgert command run beside the suite
        # (a benchmark, the quick start) trips this as well, so the message says so
        pytest.fail("the tests changed the machine's edgert directories: " + ", ".join(changed[:10])
                    + " (unless another edgert process on this machine wrote them during the run)",
                    pytrace=False)


@pytest.fixture(autouse=True)
def private_dirs(tmp_path_factory, monkeypatch) -> Path:
    """This test's XDG directories; subprocesses (agents, the CLI) inherit them."""
    home = tmp_path_factory.mktemp("home")
    for var, value in private_env(home).items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("EDGERT_CACHE", raising=False)  # the arm64 board's is passed explicitly
    return home


@pytest.fixture(scope="module")
def resnet_aio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo ResNet pruned at 0, 0.25, 0.5 and 0.75 into an All-in-One file (once per module)."""
    from edgert.variants.prune import prune

    path = tmp_path_factory.mktemp("aio") / "resnet.aio"
    prune(REPO / "edgert" / "zoo" / "resnet.onnx", [0, 0.25, 0.5, 0.75], path)
    return path


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


def with_external_weights(src: Path, out_dir: Path) -> Path:
    """``src`` saved into ``out_dir`` with every weight in ``NAME.onnx.data`` beside it, as
    ``torch.onnx.export(dynamo=True)`` writes models."""
    import onnx

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / src.name
    onnx.save_model(onnx.load(str(src)), str(out), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=f"{src.name}.data", size_threshold=0)
    return out


def needs(*modules: str) -> pytest.MarkDecorator:
    """Skip unless every module is installed, found without importing it: importing TVM or
    torch at collection would cost every ``pytest -k`` seconds."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 shared by the tests that reach agents over SSH."""
    from sshd import sshd_available, start_sshd

    if not sshd_available():
        pytest.skip("needs OpenSSH's sshd (apt-get install openssh-server)")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def arm64_root() -> Path:
    """The emulated arm64 board's root, built once (or reused from its cache); skips the
    test when this machine cannot build it."""
    from arm64 import board_root

    built, why = board_root()
    if built is None:
        pytest.skip(why)
    return built


@pytest.fixture(scope="module")
def arm64_store(tmp_path_factory) -> Path:
    """The board agents' store for one test module (each SSH session starts an agent on it)."""
    return tmp_path_factory.mktemp("board") / "store"


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


def two_writers_at_once(script: str, path: Path, rounds: int) -> None:
    """Run ``script`` (``for i in range(int(sys.argv[3])):`` writing ``sys.argv[1]``, its
    writer tag in ``sys.argv[2]``) in two processes at once; both must succeed."""
    procs = [subprocess.Popen([sys.executable, "-c", "import sys\n" + script, str(path), tag, str(rounds)],
                              stderr=subprocess.PIPE, text=True) for tag in "AB"]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()


def run_cli(*args: str, block: tuple[str, ...] = (), cwd: Path | None = None,
            timeout: float = 600, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run ``edgert ARGS`` in a fresh interpreter; ``block`` makes those modules unimportable."""
    return run_python("from edgert.cli import main\nmain(sys.argv[1:])\n", *args, block=block,
                      cwd=cwd, timeout=timeout, env=env)


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 24 MiB tmpfs (root's mount; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
