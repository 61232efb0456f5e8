"""An emulated arm64 board: a Debian arm64 root run by qemu-aarch64-static, reached over SSH.

    build()            -> Path of the root (cached under ${EDGERT_CACHE:-~/.cache/edgert}/arm64-board)
    missing_tools()    -> host commands the build or the board lacks
    agent_command(...) -> the SSH ``--agent-cmd`` starting ``edgert agent --stdio --emulated``
    agent_argv(...)    -> the emulated agent's argv with other transport options (TCP)

Standard library only: it runs before anything else is set up.
"""
from .board import agent_argv, agent_command, python_argv, python_env
from .build import BoardBuildError, build, cached_root, missing_tools

__all__ = ["BoardBuildError", "agent_argv", "agent_command", "build", "cached_root", "missing_tools",
           "python_argv", "python_env"]
