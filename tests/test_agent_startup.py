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
