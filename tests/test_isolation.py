"""The suite's isolation from the machine: private XDG dirs per test, the guard on the real ones."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

import conftest
from agent_env import XDG_DIRS, stdio_agent_command


def test_each_test_and_the_processes_it_starts_have_private_xdg_dirs(private_dirs):
    for var in XDG_DIRS:
        assert os.environ[var].startswith(str(private_dirs))
    code = "import os; print(*(os.environ[v] for v in %r))" % (list(XDG_DIRS),)
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert child.stdout.split() == [os.environ[var] for var in XDG_DIRS]


def test_an_agent_command_for_sshd_carries_the_dirs_itself(private_dirs, tmp_path):
    """sshd starts a command with the login environment: the dirs must be in the command."""
    words = shlex.split(stdio_agent_command(tmp_path / "store"))
    assert words[0] == "env" and words[-4:] == ["agent", "--stdio", "--store", str(tmp_path / "store")]
    assert {w.split("=", 1)[0]: w.split("=", 1)[1] for w in words[1:5]} == \
        {var: os.environ[var] for var in XDG_DIRS}
    shown = subprocess.run(["env", "-i", "sh", "-c", shlex.join(words[:5] + ["env"])],
                           capture_output=True, text=True, check=True).stdout
    assert all(f"{var}={os.environ[var]}" in shown.splitlines() for var in XDG_DIRS)


def test_the_guard_sees_what_a_test_leaves_in_the_machine_dirs_but_not_the_board_cache(
        tmp_path, monkeypatch):
    state, board = tmp_path / "state" / "edgert", tmp_path / "cache" / "edgert" / "arm64-board"
    monkeypatch.setattr(conftest, "MACHINE_DIRS", [state, board.parent])
    monkeypatch.setattr(conftest, "SHARED", {board})
    before = conftest._snapshot()
    board.mkdir(parents=True)
    (board / "root.tar").write_text("the shared board cache")
    assert conftest._snapshot() == before
    state.mkdir(parents=True)
    (state / "dvfs-journal.json").write_text("{}")
    assert set(conftest._snapshot()) - set(before) == {state / "dvfs-journal.json"}
