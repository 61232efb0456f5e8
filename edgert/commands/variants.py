"""`edgert prune` and `edgert calibrate`: All-in-One files."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgert.commands.options import (
    address_from, device_options, echo_point, output_option, parse_dims, parse_floats, refuse_overwriting_inputs)


_INTERFACE = ("graph input ", "reaches graph output ")  # groups.py's reasons for the model's own I/O


@click.command()
@click.argument("model")
@click.option("--ratios", default="0,0.25,0.5,0.75", show_default=True,
              help="Fractions of channels removed, increasing; 0 keeps the full model.")
@output_option("-o", "--output", required=True,
              help="The All-in-One weight+mask file (safetensors layout).")
@click.option("--importance", type=click.Choice(["auto", "bn", "l1", "l2"]), default="auto",
              show_default=True, help="Channel importance: BN scale where BN survives, else weight norms.")
@click.option("--channel-multiple", default=1, show_default=True,
              help="Keep channel counts a multiple of this (SIMD-friendly widths).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def prune(model: str, ratios: str, output: Path, importance: str, channel_multiple: int, quiet: bool) -> None:
    """Write one file holding every pruning ratio of MODEL as nested channel prefixes."""
    from edgert.progress import Progress
    from edgert.variants.prune import prune as run_prune
    from edgert.zoo import resolve as resolve_model

    source = resolve_model(model)
    refuse_overwriting_inputs(output, [source], "-o")
    with Progress(quiet=quiet):  # the analysis and the level graphs take seconds on large models
        report = run_prune(source, parse_floats(ratios, "--ratios"), output,
                           importance_method=importance, multiple=channel_multiple)
    click.echo(f"{report.path}: {report.file_bytes} bytes ({report.file_bytes / report.model_bytes:.2f}x "
               "the model's weights)")
    for level in report.levels:
        click.echo(f"  ratio {level['ratio']:g}: {level['weight_bytes']} weight bytes")
    interface = [s for s in report.skipped if s["reason"].startswith(_INTERFACE)]
    if interface:  # every model has these: the channels its callers feed and read
        click.echo(f"  kept whole (the model's interface): {', '.join(s['reason'] for s in interface)}")
    for skipped in report.skipped:
        if skipped not in interface:
            click.echo(f"warning: group {skipped['group']} kept whole: {skipped['reason']}", err=True)
    if report.unpruned:
        click.echo(f"warning: every level is the full model: {report.unpruned}", err=True)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--cpu-freqs", default=None, metavar="all|LIST",
              help="Measure at these cpufreq clocks: 'all' or e.g. 600000,1.2GHz (plain numbers are kHz).")
@click.option("--cpu-policy", "cpu_policies", multiple=True,
              help="cpufreq policy to pin (repeat; default: every policy).")
@click.option("--emulated", "emulated_levels", default=None, metavar="LEVELS",
              help="Measure at emulated CPU-quota levels instead, e.g. 1.0,0.75,0.5 (labelled emulated).")
@click.option("--power", default="auto", show_default=True,
              help="Power while each level runs: auto, none, a rail name, counter:NAME or a meter URL "
                   "(as for sweep).")
@click.option("--idle", "idle_s", default=1.0, show_default=True,
              help="Seconds of idle power baseline per setting (with a power source).")
@click.option("--sysfs-root", default=None, help="sysfs root on the device (fixtures, tests).")
@click.option("--threads", type=int, default=None, help="Engine threads.")
@click.option("--max-time", default=2.0, show_default=True, help="Seconds per level and setting at most.")
@click.option("--shape", "shapes", multiple=True, metavar="DIM=SIZE",
              help="Size of a symbolic dimension, e.g. --shape N=1.")
@click.option("--accuracy", "accuracy_path", type=click.Path(path_type=Path), default=None,
              metavar="ACC.json", help='Store the levels\' accuracy, {"0.0": 0.97, "0.5": 0.95, ...} '
                                       "(alone, or with a measurement).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@device_options
def calibrate(file: Path, cpu_freqs: str | None, cpu_policies: tuple[str, ...], emulated_levels: str | None,
              power: str, idle_s: float, sysfs_root: str | None, threads: int | None, max_time: float,
              shapes: tuple[str, ...], accuracy_path: Path | None, quiet: bool, **device: Any) -> None:
    """Measure every level of an All-in-One FILE at every setting on --device (latency, and power
    and energy when the device has a sensor); store the table in FILE."""
    from edgert.sweep import SweepJob, parse_freqs, parse_levels
    from edgert.variants.accuracy import read_accuracy_json, store_accuracy
    from edgert.variants.calibrate import calibrate_device, calibration_request

    if accuracy_path is not None:
        table = store_accuracy(file, read_accuracy_json(accuracy_path))
        click.echo(f"{file}: accuracy stored for {len(table)} levels")
        if not (cpu_freqs or emulated_levels):
            return
    request = calibration_request(parse_freqs(cpu_freqs, "kHz"), parse_levels(emulated_levels),
                                  cpu_policies=cpu_policies, power=power, idle_s=idle_s,
                                  sysfs_root=sysfs_root, threads=threads, max_time_s=max_time,
                                  dims=parse_dims(shapes))
    job = SweepJob(file, request)

    from edgert.progress import Progress

    with Progress(quiet=quiet):  # uploads to a device show their progress
        cal = calibrate_device(job, address_from(**device), progress=None if quiet else echo_point)
    energy = f", energy per inference from {cal['power_source']}" if "energy_mj" in cal else \
        f", power {cal['power']['status']}: not measured" if cal["power"]["status"] != "none" else ""
    click.echo(f"{file}: calibration table stored in the file ({len(cal['p50_ms'])} levels x "
               f"{len(cal['frequencies'])} settings{energy})")
    for warning in cal["warnings"]:
        click.echo(f"warning: {warning}", err=True)
