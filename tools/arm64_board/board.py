"""Run things on a built board: the emulated Python's argv and the agent command for SSH."""
from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import tempfile
from pathlib import Path

from .recipe import PYTHON, QEMU_CPU

REPO = Path(__file__).resolve().parents[2]  # edgert is pure Python: the board imports the checkout
QEMU = "qemu-aarch64-static"
MAPPED = {"backends": "backends", "device_agents": "device_agents"}  # pyproject's package-dir


def qemu_path() -> str | None:
    return shutil.which(QEMU)


def python_argv(root: Path) -> list[str]:
    """argv prefix running the board's arm64 Python under QEMU user mode.

    ``-L root`` makes QEMU look up absolute paths (the ELF interpreter, /proc/cpuinfo, shared
    libraries) in the root first and fall back to the host's files (the repo, /tmp, /sys).
    """
    return [qemu_path() or QEMU, "-cpu", QEMU_CPU, "-L", str(root), str(root / "usr" / "bin" / PYTHON)]


def source_tree(repo: Path = REPO) -> Path:
    """A directory whose ``edgert`` package is the checkout's, laid out as pip installs it.

    The checkout keeps backends/ and device_agents/ beside edgert/ and pyproject maps them to
    ``edgert.backends``/``edgert.device_agents``; the board imports the live checkout (no
    wheel to rebuild after each edit) through links that mirror that mapping.
    """
    key = hashlib.sha256(str(repo.resolve()).encode()).hexdigest()[:12]
    tree = Path(tempfile.gettempdir()) / f"edgert-board-src-{os.getuid()}-{key}"
    package = tree / "edgert"
    package.mkdir(parents=True, exist_ok=True)
    # __pycache__ stays a real directory of the tree: the board's Python writes its .pyc there
    wanted = {entry.name: entry for entry in (repo / "edgert").iterdir() if entry.name != "__pycache__"}
    wanted.update({name: repo / folder for name, folder in MAPPED.items()})
    for name, target in wanted.items():
        link = package / name
        if not (link.is_symlink() and os.readlink(link) == str(target)):
            link.unlink(missing_ok=True)
            try:
                link.symlink_to(target)
            except FileExistsError:  # another process laid the same link meanwhile
                pass
    for stale in package.iterdir():
        if stale.name not in wanted and stale.name != "__pycache__":
            stale.unlink(missing_ok=True)
    return tree


def python_env(repo: Path = REPO) -> dict[str, str]:
    """Environment for the board's Python: edgert from the checkout, no host user site."""
    # runtime-only TVM: skips loading the 240 MB compiler library the board never uses
    return {"PYTHONPATH": str(source_tree(repo)), "PYTHONNOUSERSITE": "1", "TVM_USE_RUNTIME_LIB": "1"}


def agent_command(root: Path, store: Path, repo: Path = REPO,
                  env: dict[str, str] | None = None) -> str:
    """The ``--agent-cmd`` (or sshd forced command) that starts the emulated agent on stdio.

    ``--emulated`` makes the agent label every result it returns: emulated timings say
    nothing about a real Cortex-A76. ``env`` adds variables (tests give the agent private
    XDG directories: sshd starts the command with the login environment).
    """
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in {**python_env(repo), **(env or {})}.items())
    return f"exec env {env} {shlex.join(agent_argv(root, store, '--stdio'))}"


def agent_argv(root: Path, store: Path, *args: str) -> list[str]:
    """argv of the emulated agent (run it with ``python_env()``): ``--stdio`` for SSH, or
    e.g. ``--listen HOST:PORT --token-file F`` for a long-lived agent reached over TCP.

    ``-P``: the working directory stays off ``sys.path``; started in a checkout, ``-m edgert``
    would import the checkout's edgert/ folder, which lacks the mapped device_agents/."""
    return [*python_argv(root), "-P", "-m", "edgert", "agent", *args, "--emulated", "--store", str(store)]
