"""`edgert agent` start-up: a DVFS journal a crashed sweep left is replayed before serving, and a
bad choice of transport is refused before anything on the device changes."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli, run_python
from edgert.device_agents.agent import start_agent
from edgert.device_agents.sweep import default_journal_path
from test_discovery import board, tree

_CRASH = """
import os, sys
from edgert.device_agents.dvfs import DvfsControl
from edgert.device_agents.sweep import default_journal_path

dvfs = DvfsControl(sys.argv[1], journal_path=default_journal_path()).__enter__()
dvfs.pin_cpu("policy0", 1510400)  # the fixture reads back this clock
os._exit(0)  # dies pinned: no restore, the journal stays
"""


def test_start_agent_restores_what_a_crashed_sweep_left_pinned(tmp_path: Path, monkeypatch,
                                                                capsys) -> None:
    root = board(tmp_path, "jetson_orin")
    before = tree(root)
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    monkeypatch.setenv("XDG_STATE_HOME", env["XDG_STATE_HOME"])
    proc = run_python(_CRASH, str(root), env=env)
    assert proc.returncode == 0, proc.stderr
    assert tree(root) != before and default_journal_path().exists()
    agent = start_agent(tmp_path / "store", sysfs_root=str(root))
    assert tree(root) == before and not default_journal_path().exists()
    assert "restored 2 DVFS setting(s) left by a crashed sweep" in capsys.readouterr().err
    assert agent.sysfs_root == str(root) and (tmp_path / "store").is_dir()


@pytest.mark.parametrize("args, says", [
    ((), "choose exactly one of --stdio, --serial DEV, --listen HOST:PORT"),
    (("--stdio", "--listen", "127.0.0.1:1"), "choose exactly one of --stdio, --serial DEV, --listen HOST:PORT"),
    (("--listen", "127.0.0.1:7723"), "--listen needs HOST:PORT and --token-file"),
    (("--listen", "nohost", "--token-file", "t"), "--listen needs HOST:PORT and --token-file"),
])
def test_a_bad_transport_choice_is_one_line_and_changes_nothing(tmp_path: Path, args, says: str) -> None:
    store = tmp_path / "store"
    proc = run_cli("agent", *args, "--store", str(store), env={"XDG_STATE_HOME": str(tmp_path / "state")})
    assert proc.returncode == 2 and proc.stderr == f"edgert: error: {says}\n"
    assert not store.exists()


@pytest.mark.parametrize("args, says", [
    (("--listen", "127.0.0.1:99999", "--token-file", "TOKEN"), "is not a TCP port"),
    (("--listen", "256.1.1.1:5", "--token-file", "TOKEN"), "cannot listen on 256.1.1.1:5"),
    (("--listen", "127.0.0.1:0", "--token-file", "/dev/zero"), "is not a regular file"),
    (("--listen", "127.0.0.1:0", "--token-file", "TOKEN", "--idle-timeout", "nan"), "--idle-timeout"),
    (("--listen", "127.0.0.1:0", "--token-file", "TOKEN", "--idle-timeout", "inf"), "--idle-timeout"),
    (("--serial", "/dev/ttyS0", "--baud", "99999999999999999999"), "not a serial line rate"),
    (("--listen", "127.0.0.1:0", "--token-file", "TOKEN", "--store", "AFILE"), "as the artifact store"),
    (("--listen", "127.0.0.1:-1", "--token-file", "TOKEN"), "--listen port -1 is not a TCP port"),  # blamed the token file
    (("--listen", "127.0.0.1:0", "--token-file", "/tmp"), "token file /tmp is a directory, not a file"),  # Errno 21: 3
    (("--listen", "127.0.0.1:0", "--token-file", "TOKEN", "--store-quota-mb", "-5"),
     "Invalid value for '--store-quota-mb': -5 is not in the range x>=1"),  # then every push failed
    (("--listen", "127.0.0.1:0", "--token-file", "TOKEN", "--store-quota-mb", "0"), "--store-quota-mb"),
    (("--listen", "127.0.0.1:0", "--token-file", "TOKEN", "--sysfs-root", "/no/such/dir"),
     "--sysfs-root /no/such/dir does not exist"),  # was served silently, every board empty
    (("--listen", "127.0.0.1:0", "--token-file", "TOKEN", "--sysfs-root", "AFILE"), "is not a directory"),
])
def test_agent_startup_mistakes_are_one_line(tmp_path: Path, args, says: str) -> None:
    """Tracebacks before (OverflowError, OSError, MemoryError, NotADirectoryError); NaN/inf idle
    timeouts were accepted and then broke every session."""
    token = tmp_path / "token"
    token.write_text("a-token-long-enough-for-the-agent\n")
    (tmp_path / "afile").write_text("not a directory")
    args = tuple(str(token) if a == "TOKEN" else str(tmp_path / "afile") if a == "AFILE" else a for a in args)
    if "--store" not in args:
        args += ("--store", str(tmp_path / "store"))
    proc = run_cli("agent", *args, env={"XDG_STATE_HOME": str(tmp_path / "state")}, timeout=60)
    assert proc.returncode != 0 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_second_agent_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    token = tmp_path / "token"
    token.write_text("a-token-long-enough-for-the-agent\n")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = run_cli("agent", "--listen", f"127.0.0.1:{port}", "--token-file", str(token),
                       "--store", str(tmp_path / "store"), env={"XDG_STATE_HOME": str(tmp_path / "state")},
                       timeout=60)
    assert proc.returncode != 0 and "Address already in use" in proc.stderr and "Traceback" not in proc.stderr


def test_a_read_only_store_is_refused_at_start(tmp_path: Path, small_disk: Path) -> None:
    """An existing store tree on a read-only mount: the agent started, then every upload failed
    with 'agent failed on store.put: OSError: [Errno 30] Read-only file system'."""
    import subprocess

    store = small_disk / "store"
    for sub in ("objects", "partial", "labels", "named"):
        (store / sub).mkdir(parents=True)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    token = tmp_path / "token"
    token.write_text("a-token-long-enough-for-the-agent\n")
    proc = run_cli("agent", "--listen", "127.0.0.1:0", "--token-file", str(token), "--store", str(store),
                   env={"XDG_STATE_HOME": str(tmp_path / "state")}, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr == f"edgert: error: cannot use {store} as the artifact store: Read-only file system\n"
