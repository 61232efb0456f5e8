"""What goes into the emulated arm64 board: Debian packages, aarch64 wheels, and the recipe hash.

Everything here is data. Changing any of it changes ``recipe_hash()``, so a cached root built
from an older recipe is never reused.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

RECIPE_VERSION = 1  # bump when build.py changes what it makes from the same lists

SUITE = "bookworm"  # its python3.11 is 3.11.2: cp311 wheels
PYTHON = "python3.11"
DEBIAN_SOURCES = (
    ("http://deb.debian.org/debian", "bookworm"),
    ("http://deb.debian.org/debian", "bookworm-updates"),
    ("http://deb.debian.org/debian-security", "bookworm-security"),
)
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# apt resolves their dependencies (libc6, libssl3, ...) against an empty package database.
DEBIAN_PACKAGES = ("python3.11", "libstdc++6", "libgomp1")

# The device side of edgert and its engines, pinned to what the host's .venv runs so the
# board and the host compute with the same versions (tests/test_arm64_board.py checks the
# ones pyproject pins exactly).
WHEELS = (
    "numpy==2.4.6",
    "msgpack==1.2.4",
    "click>=8.1",
    "rich>=13",
    "apache-tvm==0.27.0.post1",
    "apache-tvm-ffi==0.1.14.post1",
    "onnxruntime==1.32.0",
    "ai-edge-litert==2.3.0",
)
# pip does not widen --platform to older manylinux tags: list every glibc up to bookworm's 2.36.
WHEEL_PLATFORMS = ("manylinux2014_aarch64", "linux_aarch64",
                   *(f"manylinux_2_{minor}_aarch64" for minor in range(17, 37)))

# The CPU QEMU emulates: a Raspberry Pi 5's core (ARMv8.2-A with dot product), so the
# instruction set matches a real board. Its speed says nothing about one.
QEMU_CPU = "cortex-a76"


def recipe_hash() -> str:
    """Short hash of everything above; the cache directory's name."""
    recipe = {"version": RECIPE_VERSION, "suite": SUITE, "python": PYTHON,
              "sources": DEBIAN_SOURCES, "debs": DEBIAN_PACKAGES, "wheels": WHEELS,
              "platforms": WHEEL_PLATFORMS, "cpu": QEMU_CPU}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """``${EDGERT_CACHE:-~/.cache/edgert}/arm64-board``."""
    base = os.environ.get("EDGERT_CACHE") or str(Path.home() / ".cache" / "edgert")
    return Path(base) / "arm64-board"
