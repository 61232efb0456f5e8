"""Run things on a built board: the emulated Python's argv and the agent command for SSH."""
from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from .recipe import PYTHON, QEMU_CPU

REPO = Path(__file__).resolve().parents[2]  # edgert is pure Python: the board imports the checkout
QEMU = "qemu-aarch64-static"


def qemu_path() -> str | None:
    return shutil.which(QEMU)


def python_argv(root: Path) -> list[str]:
    """argv prefix running the board's arm64 Python under QEMU user mode.

    ``-L root`` makes QEMU look up absolute paths (the ELF interpreter, /proc/cpuinfo, shared
    libraries) in the root first and fall back to the host's files (the repo, /tmp, /sys).
    """
    return [qemu_path() or QEMU, "-cpu", QEMU_CPU, "-L", str(root), str(root / "usr" / "bin" / PYTHON)]


def python_env(repo: Path = REPO) -> dict[str, str]:
    """Environment for the board's Python: edgert from the checkout, no host user site."""
    # runtime-only TVM: skips loading the 240 MB compiler library the board never uses
    return {"PYTHONPATH": str(repo), "PYTHONNOUSERSITE": "1", "TVM_USE_RUNTIME_LIB": "1"}


def agent_command(root: Path, store: Path, repo: Path = REPO) -> str:
    """The ``--agent-cmd`` (or sshd forced command) that starts the emulated agent on stdio.

    ``--emulated`` makes the agent label every result it returns: emulated timings say
    nothing about a real Cortex-A76.
    """
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in python_env(repo).items())
    argv = [*python_argv(root), "-m", "edgert", "agent", "--stdio", "--emulated", "--store", str(store)]
    return f"exec env {env} {shlex.join(argv)}"
