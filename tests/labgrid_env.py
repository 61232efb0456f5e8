"""A real labgrid coordinator and exporter on 127.0.0.1, and labgrid-client, for device tests."""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agent_env import stop as stop_process

BIN = Path(sys.executable).parent


def labgrid_available() -> bool:
    return all((BIN / tool).exists() or shutil.which(tool)
               for tool in ("labgrid-coordinator", "labgrid-exporter", "labgrid-client"))


def _tool(name: str) -> str:
    return str(BIN / name) if (BIN / name).exists() else name


@dataclasses.dataclass
class Lab:
    address: str  # HOST:PORT of the coordinator
    workdir: Path
    procs: list[subprocess.Popen] = dataclasses.field(default_factory=list)

    def client(self, *args: str, check: bool = True,
               user: str | None = None) -> subprocess.CompletedProcess[str]:
        """``labgrid-client -x ADDRESS ARGS`` (the reference client, independent of edgert);
        ``user`` acts as another labgrid user (``LG_USERNAME``)."""
        env = {**os.environ, **({"LG_USERNAME": user} if user else {})}
        env.pop("LG_COORDINATOR", None)
        proc = subprocess.run([_tool("labgrid-client"), "-x", self.address, *args],
                              capture_output=True, text=True, timeout=60, env=env)
        if check and proc.returncode != 0:
            raise RuntimeError(f"labgrid-client {' '.join(args)}: {proc.stderr}")
        return proc

    def export(self, configs: dict[str, tuple[str, ...]]) -> None:
        """Start one exporter per ``{NAME: (YAML, *FLAGS)}``; returns once all are registered."""
        for name, (config, *flags) in configs.items():
            path = self.workdir / f"{name}.yaml"
            path.write_text(config)
            log = open(self.workdir / f"{name}.log", "wb")
            self.procs.append(subprocess.Popen(
                [_tool("labgrid-exporter"), "-c", self.address, "-n", name, "--hostname",
                 "127.0.0.1", *flags, str(path)], stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir))
        deadline = time.monotonic() + 30
        while True:
            listed = self.client("resources").stdout
            if all(f"{name}/" in listed for name in configs):
                return
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                logs = [(self.workdir / f"{name}.log").read_text() for name in configs]
                raise RuntimeError(f"exporters did not register: {logs}")
            time.sleep(0.2)

    def add_places(self, places: dict[str, tuple[str, dict[str, str]]]) -> None:
        """``{PLACE: (MATCH, TAGS)}``, created side by side (each labgrid-client call takes ~1 s)."""
        def add(place: str, match: str, tags: dict[str, str]) -> None:
            self.client("-p", place, "create")
            self.client("-p", place, "add-match", match)
            if tags:
                self.client("-p", place, "set-tags", *(f"{k}={v}" for k, v in tags.items()))

        with ThreadPoolExecutor(len(places)) as pool:
            for done in [pool.submit(add, p, m, t) for p, (m, t) in places.items()]:
                done.result()

    def acquired_by(self, place: str) -> str | None:
        """Who holds ``place`` per ``labgrid-client show`` ("host/user"), or None when free."""
        out = self.client("-p", place, "show").stdout
        holder = re.search(r"^\s*acquired:\s*(\S+)", out, re.M)
        if holder is None:
            raise RuntimeError(f"unexpected labgrid-client show output: {out}")
        return None if holder.group(1) == "None" else holder.group(1)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)


def start_lab(workdir: Path) -> Lab:
    """A coordinator listening on 127.0.0.1 only, on a port the OS picks (no race for a free one)."""
    workdir.mkdir(parents=True, exist_ok=True)  # it keeps places.yaml in its working directory
    proc = subprocess.Popen([_tool("labgrid-coordinator"), "-l", "127.0.0.1:0"], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=open(workdir / "coordinator.log", "wb"),
                            text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    bound = re.match(r"listening on 127\.0\.0\.1:(\d+)", line)
    if bound is None:
        proc.kill()
        raise RuntimeError(f"labgrid-coordinator did not start: {line!r} "
                           f"{(workdir / 'coordinator.log').read_text()}")
    return Lab(f"127.0.0.1:{bound.group(1)}", workdir, [proc])
