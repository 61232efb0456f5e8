"""`edgert lut` and `edgert search`: per-layer width configurations of All-in-One files."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgert.commands.options import address_from, device_options
from edgert.errors import UsageError


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--cpu-freqs", default=None, metavar="LIST",
              help="Measure at these cpufreq clocks, e.g. 600000,1.2GHz (plain numbers are kHz).")
@click.option("--cpu-policy", default="policy0", show_default=True, help="cpufreq policy to pin.")
@click.option("--emulated", "emulated_levels", default=None, metavar="LEVELS",
              help="Measure at emulated CPU-quota levels instead, e.g. 1.0,0.5 (labelled emulated).")
@click.option("--power", default="none", show_default=True,
              help="Power source for energy per block: none, auto, a rail name, counter:NAME, a meter URL.")
@click.option("--sysfs-root", default=None,
              help="sysfs root (fixtures, tests; on a device it must be the agent's own) [default: /].")
@click.option("--threads", type=int, default=1, show_default=True, help="Engine threads.")
@click.option("--window-ms", default=30.0, show_default=True, help="One timing window (ms).")
@click.option("--repeats", default=5, show_default=True,
              help="Interleaved rounds of one window each (an entry keeps its fastest; at "
                   "--emulated levels, the median of its times paired with the whole network).")
@click.option("--clock", type=click.Choice(["wall", "cpu"]), default="wall", show_default=True,
              help="wall: latency; cpu: this thread's CPU time (needs --threads 1; immune to other "
                   "processes, blind to stalls, so not with --emulated).")
@click.option("--checks", default=8, show_default=True,
              help="Random whole-network configurations checked besides the uniform levels.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--from-json", "from_json", default=None, type=click.Path(path_type=Path), metavar="JSON",
              help="Measure nothing: store the table an earlier run kept in JSON when it could not "
                   "write FILE.")
@device_options
def lut(file: Path, cpu_freqs: str | None, cpu_policy: str, emulated_levels: str | None, power: str,
        sysfs_root: str | None, threads: int, window_ms: float, repeats: int, clock: str, checks: int,
        quiet: bool, from_json: Path | None, **device: Any) -> None:
    """Measure FILE's per-block latency table (FBNet style) at every setting, here or on --device
    through its agent; store it in FILE."""
    from edgert.progress import Progress
    from edgert.sweep import parse_freqs, parse_levels
    from edgert.variants import lut as lut_mod

    if from_json is not None:
        if cpu_freqs or emulated_levels:
            raise UsageError("--from-json stores a table already measured: give no --cpu-freqs or --emulated")
        table = lut_mod.adopt(file, from_json)
        click.echo(f"{file}: stored the latency table of {len(table['blocks'])} blocks at "
                   f"{len(table['frequencies'])} settings{_provenance(table)} from {from_json}")
        return
    freqs = parse_freqs(cpu_freqs, "kHz")
    if freqs == "all":
        raise UsageError("--cpu-freqs all is not supported by lut: list the clocks (each costs a full table)")
    levels = parse_levels(emulated_levels)
    settings = lut_mod.LutSettings(window_ms=window_ms, repeats=repeats, checks=checks, threads=threads,
                                   clock=clock)
    progress = None if quiet else (lambda line: click.echo(line, err=True))
    address = address_from(**device)
    if address.scheme == "local":
        frequency_settings, unit, emulated = lut_mod.settings_for(freqs, cpu_policy, levels, sysfs_root or "/")
        table = lut_mod.measure(file, frequency_settings, settings, unit=unit, emulated=emulated, power=power,
                                sysfs_root=sysfs_root or "/", progress=progress)
    else:
        with Progress(quiet=quiet):  # the upload shows its progress
            table = lut_mod.measure_on_device(file, address, settings, cpu_freqs=freqs, policy=cpu_policy,
                                              emulated_levels=levels, power=power, sysfs_root=sysfs_root,
                                              progress=progress)
    label = _provenance(table)
    where = table["device"].get("hostname") or table["device"].get("transport")
    click.echo(f"{file}: latency table of {len(table['blocks'])} blocks at {len(table['frequencies'])} "
               f"settings{label}, measured on {where}, stored in the file")
    for warning in table["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    for j, f in enumerate(table["frequencies"]):
        err = table["prediction_error"][j]
        c = table["correction"][j]
        click.echo(f"  {table['labels'][j] or f}: sum of blocks vs whole network p50 "
                   f"{err['sum_of_blocks']['p50']:.1%} p90 {err['sum_of_blocks']['p90']:.1%}; corrected "
                   f"({c['fitted']['a']:.3f} x sum + {c['fitted']['b']:.3f} ms, leave-one-out) p50 "
                   f"{err['corrected_leave_one_out']['p50']:.1%} p90 {err['corrected_leave_one_out']['p90']:.1%}"
                   + ("" if c["used"] else " (not used: no better than the sum)"))


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--latency-ms", type=float, required=True, help="Latency budget (predicted, corrected).")
@click.option("--energy-mj", type=float, default=None, help="Energy budget per inference (needs energy).")
@click.option("--freq", "frequency", type=float, required=True,
              help="The table frequency to meet the budget at (its unit: kHz, or the emulated level).")
@click.option("--accuracy", default="proxy", show_default=True,
              help="'digits' (held-out split), MODULE:FUNCTION (fn(VariantModel) -> score), or 'proxy' "
                   "(kept importance mass, no data).")
@click.option("--population", default=24, show_default=True)
@click.option("--generations", default=10, show_default=True)
@click.option("--exhaustive-up-to", default=512, show_default=True,
              help="Evaluate every configuration when the space has at most this many (the exact Pareto set).")
@click.option("--seed", default=0, show_default=True)
def search(file: Path, latency_ms: float, energy_mj: float | None, frequency: float, accuracy: str,
           population: int, generations: int, exhaustive_up_to: int, seed: int) -> None:
    """Find FILE's most accurate configuration under the budget; store the Pareto sets in FILE,
    with the graphs a device needs to run them."""
    from edgert.variants.search import SearchSettings
    from edgert.variants.search import search as run_search

    result = run_search(file, latency_ms=latency_ms, energy_mj=energy_mj, frequency=frequency,
                        accuracy=accuracy, settings=SearchSettings(population=population, generations=generations,
                                                                   seed=seed, exhaustive_up_to=exhaustive_up_to))
    what = "proxy score (kept importance mass)" if result["proxy"] else f"accuracy ({accuracy})"
    click.echo(f"{file}: {result['evaluated']} configurations evaluated; sets (Pareto front + uniform levels) of "
               f"{', '.join(str(len(p)) for p in result['pareto'])} stored in the file with their "
               "graphs (a device runs them without onnx)")
    best = result["best"]
    label = _provenance(result)
    energy_label = " (FIXTURE power: not a measurement)" if result.get("energy_status") == "fixture" else ""
    if best is None:
        front = result["pareto"][result["frequencies"].index(result["query"]["frequency"])]
        budget = f"{latency_ms:g} ms" + (f" and {energy_mj:g} mJ" if energy_mj is not None else "")
        reach = f"the fastest predicts {min(e['latency_ms'] for e in front):.3f} ms"
        if energy_mj is not None:
            reach += f", the most frugal {min(e['energy_mj'] for e in front):.3f} mJ{energy_label}"
        raise UsageError(f"no configuration meets {budget} at {frequency:.10g}{label}: {reach} "
                         "(the Pareto sets are stored)")
    click.echo(f"best: {best['config']} (key {best['key']}), {what} {best['accuracy']:.4f}, "
               f"predicted {best['latency_ms']:.3f} ms"
               + (f", {best['energy_mj']:.3f} mJ{energy_label}" if "energy_mj" in best else "") + label)


def _provenance(table: dict[str, Any]) -> str:
    """How to read a table's or search's numbers: emulated levels or device, fixture clocks."""
    if table.get("emulated"):
        return (" (EMULATED levels, not clocks)" if table.get("frequency_unit") == "emulated fraction"
                else " (EMULATED device: clocks not real)")
    return " (FIXTURE sysfs: clocks not real)" if table.get("fixture") else ""
