"""Check the import contracts of pyproject's ``[tool.importlinter]`` on edgert as pip installs it.

import-linter finds a package by walking its directory, and in the checkout
``edgert.backends``/``edgert.device_agents`` live beside ``edgert/`` (pyproject's
package-dir mapping), so the contracts run on a tree of links laid out like the installed
package (the one the arm64 board imports). ``--tree DIR`` checks another such layout
instead (the tests use it to prove a deliberate violation is caught).

    python tools/lint_imports.py [--tree DIR] [--verbose]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from arm64_board.board import source_tree  # noqa: E402

_RUN = ("import sys\n"
        "from importlinter.cli import lint_imports\n"
        "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True,\n"
        "                      verbose=sys.argv[2] == '1'))\n")


def lint(tree: Path, verbose: bool = False) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the ``edgert`` package under ``tree``; its output and exit status."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", _RUN, str(REPO / "pyproject.toml"), "1" if verbose else "0"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=None,
                        help="a directory holding an installed-layout edgert package")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    done = lint(args.tree or source_tree(REPO), args.verbose)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
