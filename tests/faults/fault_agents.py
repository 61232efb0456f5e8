"""Agents started as real processes for the fault tests, each with private store and state dirs."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def start_agent(tmp: Path, *args: str) -> subprocess.Popen:
    """``edgert agent ARGS`` with its store, journal and logs under ``tmp``; stderr goes to tmp/agent.log."""
    env = {**os.environ, "XDG_DATA_HOME": str(tmp / "data"), "XDG_STATE_HOME": str(tmp / "state"),
           "XDG_CONFIG_HOME": str(tmp / "config"), "XDG_CACHE_HOME": str(tmp / "cache")}
    log = open(tmp / "agent.log", "wb")
    try:
        return subprocess.Popen([sys.executable, "-m", "edgert", "agent", *args, "--store", str(tmp / "store")],
                                stdout=subprocess.DEVNULL, stderr=log, env=env)
    finally:
        log.close()


def agent_log(tmp: Path) -> str:
    return (tmp / "agent.log").read_text(errors="replace")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_listening(port: int, timeout: float = 30.0) -> None:
    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False
    wait_until(listening, timeout, f"an agent listening on port {port}")
