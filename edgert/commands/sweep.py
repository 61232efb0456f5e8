"""`edgert sweep`: latency, power and energy at each clock setting."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgert.commands.options import (
    address_from, device_options, echo_point, measure_args, measure_options, output_option, refuse_overwriting_inputs,
    write_json_output)
from edgert.errors import SysfsError


@click.command()
@click.argument("model")
@click.option("--backend", default="ort", show_default=True, help="Engine: ort, tvm, tflite or null.")
@click.option("--cpu-freqs", default=None, metavar="all|LIST",
              help="CPU clocks to visit: 'all' or e.g. 600000,1.2GHz (plain numbers are kHz).")
@click.option("--cpu-policy", "cpu_policies", multiple=True,
              help="cpufreq policy to pin (repeat; default: every policy).")
@click.option("--gpu-freqs", default=None, metavar="all|LIST",
              help="GPU (devfreq) clocks: 'all' or e.g. 76800000,921.6MHz (plain numbers are Hz).")
@click.option("--gpu-device", default=None, help="devfreq device to pin (default: the first GPU).")
@click.option("--emulated", "emulated_levels", default=None, metavar="LEVELS",
              help="Emulated CPU-bandwidth levels, e.g. 1.0,0.5,0.25 (cgroup quota; labelled emulated).")
@click.option("--power", default="auto", show_default=True,
              help="auto, none, a rail name, counter:NAME, or meter+line:///dev/ttyX?baud=N / "
                   "meter+um25c:///dev/rfcommN (a meter attached to the device).")
@click.option("--sample-rate", default=100.0, show_default=True, help="Power samples per second (at most).")
@click.option("--idle", "idle_s", default=1.0, show_default=True,
              help="Seconds of idle power baseline per point.")
@click.option("--cool-below", type=float, default=None,
              help="Wait until every thermal zone is below this many degrees C.")
@click.option("--cool-timeout", default=120.0, show_default=True,
              help="Give up waiting to cool after this many seconds.")
@click.option("--sysfs-root", default=None, help="sysfs root on the device (fixtures, tests).")
@measure_options
@output_option("--json", "json_path", default=None, metavar="PATH|-",
              help="Write the edgert.sweep/1 result file (- prints it on stdout, the summary on stderr).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@device_options
def sweep(model: str, backend: str, cpu_freqs: str | None, cpu_policies: tuple[str, ...],
          gpu_freqs: str | None, gpu_device: str | None, emulated_levels: str | None, power: str,
          sample_rate: float, idle_s: float, cool_below: float | None, cool_timeout: float,
          sysfs_root: str | None, json_path: Path | None, quiet: bool, inputs: tuple[str, ...],
          shapes: tuple[str, ...], warmup: int, runs: int | None, min_time: float, max_time: float,
          threads: int | None, seed: int, target: str, **device: Any) -> None:
    """Measure MODEL at each CPU/GPU clock (or emulated level): latency, power, energy.

    Every sysfs file the sweep changes is restored afterwards (also after a crash, from the
    journal, when the next sweep or agent starts).
    """
    from edgert.progress import Progress
    from edgert.settings import SweepRequest
    from edgert.sweep import SweepJob, parse_freqs, parse_levels, summary_lines, sweep as run_sweep
    from edgert.zoo import resolve as resolve_model

    measure = measure_args(inputs, shapes, warmup, runs, min_time, max_time, threads, seed, target)
    input_files = measure.pop("input_files")
    request = SweepRequest(backend=backend, cpu_freqs=parse_freqs(cpu_freqs, "kHz"),
                           cpu_policies=cpu_policies, gpu_freqs=parse_freqs(gpu_freqs, "Hz"),
                           gpu_device=gpu_device, emulated_levels=parse_levels(emulated_levels),
                           power=power, sample_rate_hz=sample_rate, idle_s=idle_s,
                           cool_below_c=cool_below, cool_timeout_s=cool_timeout, sysfs_root=sysfs_root,
                           **measure)
    job = SweepJob(resolve_model(model), request, input_files)
    refuse_overwriting_inputs(json_path, [job.model, *input_files.values()], "--json")

    with Progress(quiet=quiet):
        res = run_sweep(job, address_from(**device), None if quiet else echo_point)
    if json_path:
        write_json_output(res, json_path)
    for line in summary_lines(res):
        click.echo(line, err=str(json_path) == "-")
    for warning in res["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    if all(p["error"] for p in res["points"]):
        raise SysfsError(f"the sweep measured no setting ({len(res['points'])} tried, every one failed)")
