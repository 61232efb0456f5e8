"""``tools/arm64-board``: build (or reuse) the emulated arm64 board and print how to use it."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from . import recipe
from .board import agent_command, python_argv, python_env
from .build import BoardBuildError, build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/arm64-board", description=__doc__)
    parser.add_argument("--cache-dir", type=Path, help=f"default: {recipe.cache_dir()}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("build", help="build or reuse the root; print its path (the default)")
    cmd = sub.add_parser("agent-cmd", help="print the --agent-cmd that starts the emulated agent")
    cmd.add_argument("--store", type=Path, default=Path("/tmp/edgert-arm64-store"),
                     help="the agent's artifact store (a host path)")
    sub.add_parser("python", help="run the board's arm64 Python with the remaining arguments")
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "python":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        root = build(args.cache_dir)
    except BoardBuildError as exc:
        print(f"arm64-board: error: {exc}", file=sys.stderr)
        return 1
    if args.command == "agent-cmd":
        print(agent_command(root, args.store.resolve()))
    elif args.command == "python":
        env = {**os.environ, **python_env()}
        return subprocess.run([*python_argv(root), *rest], env=env).returncode
    else:
        print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
