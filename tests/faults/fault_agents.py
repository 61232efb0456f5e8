"""Agents started as real processes for the fault tests: the suite's ``agent_env.start_agent``
with private XDG dirs and the store under the test's tmp dir, and stderr kept for the checks."""
from __future__ import annotations

import subprocess
from pathlib import Path

from agent_env import private_env, stop  # noqa: F401 (the fault tests import stop from here)
from agent_env import start_agent as start_suite_agent


def start_agent(tmp: Path, *args: str) -> subprocess.Popen:
    """``edgert agent ARGS`` with its store, journal and logs under ``tmp``; stderr goes to tmp/agent.log."""
    with open(tmp / "agent.log", "wb") as log:
        return start_suite_agent(*args, "--store", str(tmp / "store"), env=private_env(tmp),
                                 stdout=subprocess.DEVNULL, stderr=log)


def agent_log(tmp: Path) -> str:
    return (tmp / "agent.log").read_text(errors="replace")

