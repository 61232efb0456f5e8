"""`edgert tune`: MetaSchedule tuning into a database."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgert.errors import UsageError

import click

from edgert.commands.options import (address_from, device_options, output_option, refuse_overwriting_inputs,
                                     write_json_output)


@click.command()
@click.argument("model")
@click.option("--db", type=click.Path(path_type=Path), required=True,
              help="Tuning database directory (created if absent; one subdirectory per target). "
                   "Reuse it with compile/bench --tuning-db.")
@click.option("--time-budget", type=float, default=None, metavar="SECONDS",
              help="Stop after this long (checked after each measured batch).")
@click.option("--trials", type=int, default=None, metavar="N", help="Stop after N measured candidates.")
@click.option("--target", default=None,
              help="host, aarch64 (Raspberry Pi 4/5, Jetson), or a TVM target as JSON "
                   "[default: host; for a bundle, the target it was compiled for].")
@click.option("--trials-per-iter", default=32, show_default=True, help="Candidates per measured batch.")
@click.option("--seed", type=int, default=None, help="Seed for MetaSchedule's search.")
@output_option("--json", "json_path", default=None, metavar="PATH|-",
              help="Write the tuning summary (tasks, trials, best latency per task); - prints it on stdout.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--verbose", is_flag=True, help="Also print MetaSchedule's own log.")
@device_options
def tune(model: str, db: Path, time_budget: float | None, trials: int | None, target: str | None,
         trials_per_iter: int, seed: int | None, json_path: Path | None, quiet: bool,
         verbose: bool, **device: Any) -> None:
    """MetaSchedule-tune MODEL (ONNX, or every TVM segment of a .edgert bundle) for TVM into a
    database; candidates are timed on --device.

    Records are appended as they are measured, so an interrupted run keeps its work and a
    later run continues from it.
    """
    import contextlib

    from edgert.compilers.tvm_target import resolve_target
    from edgert.compilers.tvm_tune import agent_timer, format_progress, summary_line, tune_model
    from edgert.dynamic.tune import tune_bundle
    from edgert.zoo import resolve as resolve_model

    path = resolve_model(model)
    refuse_overwriting_inputs(json_path, [path, db], "--json")
    if path.suffix not in (".onnx", ".edgert"):
        raise UsageError(f"edgert tune takes an .onnx model or an .edgert bundle, not {path.name}")
    from edgert.progress import Progress

    addr = address_from(**device)

    with contextlib.ExitStack() as stack:
        live = stack.enter_context(Progress(quiet=quiet))
        # from the first second: importing, extracting tasks and building the first batch
        # take a while before MetaSchedule reports its first measured batch
        status = live.step(f"tuning {path.name}: importing and extracting tasks")
        stack.callback(status.close)

        def show(p: Any) -> None:
            if not quiet:
                status.update(f"tuning {path.name}", format_progress(p))
        timer, emulated = None, addr.emulated
        if addr.scheme != "local":
            from edgert.devices.connect import open_client

            client = stack.enter_context(open_client(addr))
            timer, emulated = agent_timer(client), emulated or client.capabilities.emulated
        options = dict(time_budget_s=time_budget, trials=trials, timer=timer, on_progress=show,
                       trials_per_iter=trials_per_iter, seed=seed, verbose=verbose, emulated=emulated)
        if path.suffix == ".edgert":
            summary = tune_bundle(path, db, target, **options)
        else:
            summary = tune_model(path, db, resolve_target(target or "host"), **options)
    if json_path:
        write_json_output(summary.to_dict(), json_path)
    click.echo(summary_line(summary, path), err=str(json_path) == "-")
