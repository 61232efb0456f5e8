"""The emulated arm64 board for tests: built (or reused) once, reached through tests/sshd.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import arm64_board  # noqa: E402  (tools/ is not a package on sys.path by default)
from arm64_board.recipe import cache_dir  # noqa: E402
from agent_env import current_xdg  # noqa: E402
from sshd import sshd_available  # noqa: E402

# The board's cache as the environment pytest started in names it: the one cache the tests
# share with the machine (conftest gives each test private XDG directories and no EDGERT_CACHE).
BOARD_CACHE = cache_dir()

EM_AARCH64 = 183  # ELF e_machine


def board_root() -> tuple[Path | None, str]:
    """``(root, "")`` once the board is built, else ``(None, why it cannot be)``.

    A cold build takes about a minute here (downloads ~150 MB); later calls reuse the cache.
    """
    missing = arm64_board.missing_tools()
    if not sshd_available():
        missing.append("sshd")
    if missing:
        return None, (f"the emulated arm64 board needs {', '.join(missing)} "
                      "(apt-get install qemu-user-static openssh-server debian-archive-keyring)")
    try:
        return arm64_board.build(BOARD_CACHE), ""
    except arm64_board.BoardBuildError as exc:
        return None, f"the emulated arm64 board could not be built: {exc}"


def elf_machine(data: bytes) -> int | None:
    """e_machine of an ELF image (little-endian), or None when it is not ELF."""
    if data[:4] != b"\x7fELF" or len(data) < 20:
        return None
    return int.from_bytes(data[18:20], "little")


def device_args(sshd, root: Path, store: Path) -> list[str]:
    """CLI options that point edgert at the emulated board behind ``sshd``."""
    return ["--device", sshd.url, "--ssh-key", str(sshd.client_key),
            "--known-hosts", str(sshd.known_hosts),
            "--agent-cmd", arm64_board.agent_command(root, store, env=current_xdg())]


def address(sshd, root: Path, store: Path):
    from edgert.devices.address import parse_url

    return parse_url(sshd.url).replace(ssh_key=sshd.client_key, known_hosts=sshd.known_hosts,
                                       agent_cmd=arm64_board.agent_command(root, store, env=current_xdg()))


def start_tcp_agent(root: Path, store: Path, token_file: Path, log: Path) -> subprocess.Popen:
    """A long-lived emulated agent listening on a free 127.0.0.1 port (``ports.listening_port``
    reads it back); its stderr goes to ``log``. Stop it with ``agent_env.stop``."""
    env = {**os.environ, **arm64_board.python_env(), **current_xdg()}
    argv = arm64_board.agent_argv(root, store, "--listen", "127.0.0.1:0", "--token-file", str(token_file))
    with open(log, "wb") as err:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
