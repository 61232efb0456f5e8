"""The ``edgert`` command: thin — parse, build settings, call one library function, render."""
from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import click

from edgert.commands import bench, device, dynamic, ofa, results, run, sweep, tune, variants
from edgert.errors import EdgertError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="edgert")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Compile, deploy and measure neural networks on Linux edge boards."""
    ctx.obj = {"debug": debug}


for _command in (bench.bench, sweep.sweep, dynamic.compile_cmd, dynamic.validate, run.run,
                 device.push, device.device_group, device.agent, tune.tune, variants.prune,
                 variants.calibrate, ofa.lut, ofa.search, results.compare, results.report):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: EdgertError -> one line on stderr and its exit code."""
    args, debug = debug_anywhere(sys.argv[1:] if argv is None else argv)
    if debug:  # engine libraries' own output reaches the terminal (edgert.chatter)
        os.environ["EDGERT_DEBUG"] = "1"
    try:
        return cli.main(args=args, prog_name="edgert", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("edgert: aborted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:  # a bare `edgert`: its help, as before
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # a typed value click refused: one line, as ours
        where = f" (see edgert {exc.ctx.command_path.split(' ', 1)[-1]} --help)" \
            if isinstance(exc, click.UsageError) and exc.ctx is not None and " " in exc.ctx.command_path else ""
        click.echo(f"edgert: error: {' '.join(exc.format_message().split())}{where}", err=True)
        sys.exit(exc.exit_code)
    except EdgertError as exc:
        if debug:
            traceback.print_exc()
        one_line = " ".join(exc.message.split())  # engines' messages (ORT's) run over several lines
        click.echo(f"edgert: error: {one_line}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("edgert: interrupted", err=True)
        sys.exit(130)


def debug_anywhere(args: list[str]) -> tuple[list[str], bool]:
    """``--debug`` is accepted anywhere on the command line (before a ``--``): it moves to the
    group, where click parses it."""
    cut = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:cut]
    rest = [a for a in args[:cut] if a != "--debug"] + args[cut:]
    return (["--debug", *rest] if debug else rest), debug
