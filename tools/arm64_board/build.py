"""Build the arm64 root: Debian arm64 packages unpacked into a folder, aarch64 wheels beside them.

No debootstrap and no second stage under emulation: a private apt (its own lists, cache and
empty package database, arch arm64) resolves and downloads the .debs, ``dpkg-deb -x`` unpacks
them, and the host's pip installs aarch64 wheels with ``--platform``. Nothing is configured
inside the root, so no maintainer script ever runs under QEMU.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Callable

from . import recipe
from .board import QEMU, python_argv, python_env, qemu_path

MARKER = "board.json"  # written last: a root without it is incomplete
HOST_TOOLS = (QEMU, "apt-get", "dpkg-deb")

# The engines' CPU probes (onnxruntime's cpuinfo) read /proc/cpuinfo; QEMU 7.2 passes the
# host's x86 file through and the arm64 parser dereferences NULL. QEMU looks in the root
# first (-L), so this file answers instead. 64 entries: more than any CI host has; processors
# missing from /sys/devices/system/cpu/possible are ignored.
CPUINFO_ENTRY = """processor\t: {i}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1
"""
CPUINFO_MODEL = "Model\t: QEMU user-mode emulation of a Cortex-A76 on an x86_64 host (not real hardware)\n"

SMOKE = ("import platform, numpy, msgpack, onnxruntime, tvm, ai_edge_litert.interpreter; "
         "print(platform.machine())")


class BoardBuildError(RuntimeError):
    """The root could not be built; the message says which step and why."""


def missing_tools() -> list[str]:
    """Host commands (and the Debian archive key) the build or the board lacks."""
    missing = [tool for tool in HOST_TOOLS if (qemu_path() if tool == QEMU else shutil.which(tool)) is None]
    if not Path(recipe.DEBIAN_KEYRING).is_file():
        missing.append("debian-archive-keyring")
    return missing


def cached_root(cache: Path | None = None) -> Path | None:
    """The finished root for the current recipe, if one is cached."""
    final = (cache or recipe.cache_dir()) / recipe.recipe_hash()
    return final / "root" if (final / MARKER).is_file() else None


def build(cache: Path | None = None, log: Callable[[str], None] | None = None) -> Path:
    """The root for the current recipe: reused if cached, else built (a few minutes). Idempotent."""
    cache = cache or recipe.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two builds at once wait for each other
        root = cached_root(cache)
        if root is not None:
            return root
        missing = missing_tools()
        if missing:
            raise BoardBuildError(f"building the arm64 board needs {', '.join(missing)} "
                                  "(Debian/Ubuntu: apt-get install qemu-user-static debian-archive-keyring)")
        final = cache / recipe.recipe_hash()
        for stale in (final, *cache.glob(f"{final.name}.tmp-*")):  # unfinished earlier attempts
            shutil.rmtree(stale, ignore_errors=True)
        work = cache / f"{final.name}.tmp-{os.getpid()}"
        started = time.monotonic()
        say = log or (lambda msg: print(f"arm64-board: {msg}", file=sys.stderr))
        say(f"building {final} (recipe {final.name})")
        root = work / "root"
        debs = _fetch_debs(work / "apt")
        say(f"unpacking {len(debs)} Debian arm64 packages")
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(root)], "unpack " + deb.name)
        _write_cpuinfo(root)
        say("installing aarch64 wheels")
        site = root / "usr" / "lib" / "python3" / "dist-packages"  # on Debian Python's sys.path
        _install_wheels(site, work / "pip-cache")
        _precompile(root)
        say("checking the board's Python imports its engines")
        arch = _run([*python_argv(root), "-c", SMOKE], "smoke test", env=python_env()).strip()
        if arch != "aarch64":
            raise BoardBuildError(f"the board's Python reports machine {arch!r}, not aarch64")
        manifest = {"recipe": final.name, "recipe_version": recipe.RECIPE_VERSION,
                    "debs": sorted(_deb_id(d) for d in debs), "wheels": _installed(site),
                    "qemu_cpu": recipe.QEMU_CPU, "build_s": round(time.monotonic() - started, 1)}
        shutil.rmtree(work / "apt")
        shutil.rmtree(work / "pip-cache", ignore_errors=True)
        (work / MARKER).write_text(json.dumps(manifest, indent=1) + "\n")
        os.rename(work, final)
        say(f"built in {manifest['build_s']} s")
        return final / "root"


def _run(argv: list[str], step: str, env: dict[str, str] | None = None) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True,
                              env={**os.environ, **(env or {})})
    except OSError as exc:
        raise BoardBuildError(f"{step}: cannot run {argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise BoardBuildError(f"{step} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def _fetch_debs(apt: Path) -> list[Path]:
    """Resolve and download the packages with an apt that knows nothing of this machine."""
    for sub in ("lists/partial", "archives/partial"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").write_text("")
    sources = apt / "sources.list"
    sources.write_text("".join(f"deb [arch=arm64 signed-by={recipe.DEBIAN_KEYRING}] {uri} {suite} main\n"
                               for uri, suite in recipe.DEBIAN_SOURCES))
    options = [f"-oDir::State={apt}", f"-oDir::State::Lists={apt / 'lists'}",
               f"-oDir::State::status={apt / 'status'}", f"-oDir::Cache={apt}",
               f"-oDir::Cache::archives={apt / 'archives'}", f"-oDir::Etc::SourceList={sources}",
               "-oDir::Etc::SourceParts=/nonexistent", "-oAPT::Architecture=arm64",
               "-oAPT::Architectures=arm64", "-oDebug::NoLocking=1", "-oAPT::Sandbox::User=root",
               "-qq"]
    _run(["apt-get", *options, "update"], "apt-get update (Debian arm64 package lists)")
    _run(["apt-get", *options, "install", "-y", "--download-only", "--no-install-recommends",
          *recipe.DEBIAN_PACKAGES], "apt-get download of the arm64 packages",
         env={"DEBIAN_FRONTEND": "noninteractive"})
    debs = sorted((apt / "archives").glob("*.deb"))
    if not debs:
        raise BoardBuildError("apt-get downloaded no packages")
    return debs


def _deb_id(deb: Path) -> str:
    name, version, _ = urllib.parse.unquote(deb.name).split("_", 2)
    return f"{name}={version}"


def _write_cpuinfo(root: Path) -> None:
    proc = root / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "cpuinfo").write_text("\n".join(CPUINFO_ENTRY.format(i=i) for i in range(64))
                                  + "\n" + CPUINFO_MODEL)


def _install_wheels(site: Path, pip_cache: Path) -> None:
    """aarch64 cp311 wheels from PyPI, installed by the host's pip (nothing runs emulated)."""
    platforms = [arg for tag in recipe.WHEEL_PLATFORMS for arg in ("--platform", tag)]
    _run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q",
          "--cache-dir", str(pip_cache), "--target", str(site), "--only-binary=:all:",
          "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311", *platforms,
          *recipe.WHEELS], "pip install of the aarch64 wheels")


def _precompile(root: Path) -> None:
    """Byte-compile on the host (same 3.11 bytecode), sparing every emulated start the compile."""
    if sys.version_info[:2] != (3, 11):
        return  # the board's Python writes its own .pyc files on first use
    for tree in (root / "usr" / "lib" / "python3.11", root / "usr" / "lib" / "python3" / "dist-packages"):
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j0", str(tree)],
                       capture_output=True)  # a file that fails to compile is only compiled later


def _installed(site: Path) -> list[str]:
    return sorted(d.name.removesuffix(".dist-info").replace("-", "==", 1)
                  for d in site.glob("*.dist-info"))
