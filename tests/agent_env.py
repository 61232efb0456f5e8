"""Agents that tests start, each with its own XDG directories under a test's tmp dir.

At start an agent replays the DVFS journal in ``$XDG_STATE_HOME`` (restoring clocks a crashed
sweep left pinned) and keeps its store in ``$XDG_DATA_HOME``; one started with the machine's
directories could replay a real journal against ``/`` or fill the real store. conftest gives
every test private directories in its own environment, which subprocesses inherit; sshd starts
a command with the login environment instead, so an ``--agent-cmd`` carries them itself.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

XDG_DIRS = {"XDG_STATE_HOME": "state", "XDG_DATA_HOME": "share", "XDG_CACHE_HOME": "cache",
            "XDG_CONFIG_HOME": "config"}


def private_env(home: Path) -> dict[str, str]:
    """The XDG variables pointing under ``home`` (the directories are created on use)."""
    return {var: str(home / sub) for var, sub in XDG_DIRS.items()}


def current_xdg() -> dict[str, str]:
    """The running test's XDG variables (conftest's ``private_dirs`` set them)."""
    return {var: os.environ[var] for var in XDG_DIRS}


def agent_command(*args: str, env: dict[str, str] | None = None) -> str:
    """An ``--agent-cmd`` running ``edgert agent ARGS`` on this host with the test's XDG dirs."""
    assigns = [f"{var}={value}" for var, value in (env or current_xdg()).items()]
    return shlex.join(["env", *assigns, sys.executable, "-m", "edgert", "agent", *args])


def stdio_agent_command(store: Path) -> str:
    """The usual ``--agent-cmd`` of an SSH test: a stdio agent with its store at ``store``."""
    return agent_command("--stdio", "--store", str(store))


def start_agent(*args: str, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """``edgert agent ARGS`` as a child process with the test's (or ``env``'s) XDG dirs."""
    return subprocess.Popen([sys.executable, "-m", "edgert", "agent", *args],
                            env={**os.environ, **(env or current_xdg())}, **popen)


def stop(proc: subprocess.Popen) -> None:
    """End an agent a test started: politely, then for sure."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
