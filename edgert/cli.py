"""The ``edgert`` command: thin — parse, build settings, call one library function, render."""
from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

import click

from edgert.errors import EdgertError, UsageError


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    """``("a=1", "b=2")`` -> ``{"a": "1", "b": "2"}`` with a clear error for a missing '='."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"{what} must look like NAME=VALUE, got {item!r}")
        out[key] = value
    return out


def _dims(values: tuple[str, ...]) -> dict[str, int]:
    dims = {}
    for key, value in _pairs(values, "--shape").items():
        try:
            dims[key] = int(value)
        except ValueError:
            raise UsageError(f"--shape {key}= needs an integer, got {value!r}") from None
    return dims


def device_options(func: Any, many: bool = False) -> Any:
    """--device and the options that say how to reach it (shared by every device command).

    ``many``: --device may repeat and --all-devices takes the whole inventory (a fleet run).
    """
    where = ("local, ssh://user@host[:port], serial:///dev/ttyUSB0?baud=N, tcp://host:port, "
             "labgrid://PLACE, labgrid://?TAG=VALUE, or a name from edgert.toml.")
    options = [
        click.option("--device", "devices", multiple=True, metavar="DEVICE",
                     help=where + " Repeat to run on several boards at once.") if many else
        click.option("--device", default="local", show_default=True, help=where),
        click.option("--inventory", type=click.Path(path_type=Path), default=None,
                     help="Device inventory (default: ./edgert.toml, ~/.config/edgert/edgert.toml)."),
        click.option("--ssh-key", type=click.Path(path_type=Path), default=None,
                     help="Private key for ssh:// devices."),
        click.option("--known-hosts", type=click.Path(path_type=Path), default=None,
                     help="known_hosts file to verify ssh:// host keys (default: ~/.ssh/known_hosts)."),
        click.option("--agent-cmd", default=None,
                     help="Command that starts the agent over SSH [default: edgert agent --stdio]."),
        click.option("--insecure-accept-host-key", is_flag=True,
                     help="Accept an unknown SSH host key (INSECURE: only for throwaway test boards)."),
        click.option("--lg-coordinator", default=None, metavar="HOST:PORT",
                     help="labgrid coordinator for labgrid:// devices "
                          "[default: $LG_COORDINATOR, else 127.0.0.1:20408]."),
    ]
    if many:
        options.insert(1, click.option("--all-devices", is_flag=True,
                                       help="Run on every device of the inventory at once."))
    return _apply(func, options)


def fleet_device_options(func: Any) -> Any:
    return device_options(func, many=True)


def _address(device: str, inventory: Path | None, ssh_key: Path | None, known_hosts: Path | None,
             agent_cmd: str | None, insecure_accept_host_key: bool,
             lg_coordinator: str | None = None) -> Any:
    from edgert.devices.address import resolve

    addr = resolve(device, inventory).replace(
        ssh_key=ssh_key, known_hosts=known_hosts, agent_cmd=agent_cmd,
        insecure_accept_host_key=insecure_accept_host_key or None)
    return addr.replace(coordinator=lg_coordinator) if addr.scheme == "labgrid" else addr


def _addresses(devices: tuple[str, ...], all_devices: bool, inventory: Path | None,
               **how: Any) -> list[Any]:
    """Every --device (and with --all-devices every inventory device), each once, in order."""
    from edgert.devices.address import inventory_path, load_inventory

    names = list(devices)
    if all_devices:
        known = load_inventory(inventory_path(inventory))
        if not known:
            raise UsageError("--all-devices: the inventory (edgert.toml) lists no devices")
        names += known
    return [_address(name, inventory, **how) for name in dict.fromkeys(names or ["local"])]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="edgert")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Compile, deploy and measure neural networks on Linux edge boards."""
    ctx.obj = {"debug": debug}


def _apply(func: Any, options: list[Any]) -> Any:
    for option in reversed(options):
        func = option(func)
    return func


def measure_options(func: Any) -> Any:
    """Inputs and run-length options shared by every command that times a model."""
    return _apply(func, [
        click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy",
                     help="Feed an input from a .npy file instead of seeded random data."),
        click.option("--shape", "shapes", multiple=True, metavar="DIM=SIZE",
                     help="Size of a symbolic dimension, e.g. --shape N=4."),
        click.option("--warmup", default=5, show_default=True, help="Warm-up runs, discarded."),
        click.option("--runs", type=int, default=None,
                     help="Measure exactly this many runs (no adaptive stop)."),
        click.option("--min-time", default=1.0, show_default=True, help="Seconds to measure at least."),
        click.option("--max-time", default=10.0, show_default=True, help="Seconds to measure at most."),
        click.option("--threads", type=int, default=None, help="Engine threads (default: all usable cores)."),
        click.option("--seed", default=0, show_default=True,
                     help="Seed for random inputs and the bootstrap."),
        click.option("--target", default="host", show_default=True, help="TVM target: host or aarch64."),
    ])


def _measure_args(inputs: tuple[str, ...], shapes: tuple[str, ...], warmup: int, runs: int | None,
                  min_time: float, max_time: float, threads: int | None, seed: int,
                  target: str) -> dict[str, Any]:
    """``measure_options`` values -> settings, dims, input files and target, validated once."""
    from edgert.settings import BenchSettings

    return {
        "settings": BenchSettings(warmup_runs=warmup, runs=runs, min_duration_ms=min_time * 1000,
                                  max_duration_ms=max_time * 1000, threads=threads, seed=seed),
        "dims": _dims(shapes),
        "input_files": {k: Path(v) for k, v in _pairs(inputs, "--input").items()},
        "target": target,
    }


@cli.command()
@click.argument("model")
@click.option("--backend", "backends", multiple=True,
              help="Engine: ort (default), tvm, tflite or null; repeat to compare side by side. "
                   "Bundles (.edgert) run with their own engines: bundle.")
@measure_options
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the result file (one per backend: NAME.BACKEND.json when several).")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None,
              help="Write raw samples as CSV (same naming as --json).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--tuning-db", type=click.Path(path_type=Path), default=None,
              help="TVM: apply this MetaSchedule database (from edgert tune --db).")
@fleet_device_options
def bench(model: str, backends: tuple[str, ...], json_path: Path | None, csv_path: Path | None,
          quiet: bool, tuning_db: Path | None, inputs: tuple[str, ...], shapes: tuple[str, ...], warmup: int,
          runs: int | None, min_time: float, max_time: float, threads: int | None, seed: int,
          target: str, devices: tuple[str, ...], all_devices: bool, **device: Any) -> None:
    """Measure MODEL's latency on a device (this machine by default), or on many at once.

    MODEL is an .onnx/.tflite file, a bundle, or zoo:NAME for a bundled model. With several
    devices each board runs its own session in parallel; --json r.json then writes
    r.BOARD.json per board and the summary r.fleet.json, and a failed board is reported
    without stopping the others (exit code 1 if any failed).
    """
    from rich.console import Console

    from edgert import result
    from edgert.bench import BenchJob, bench as run_bench
    from edgert.progress import Progress
    from edgert.render import side_by_side
    from edgert.zoo import resolve as resolve_model

    from edgert.runner import BUNDLE_SUFFIX

    path = resolve_model(model)
    default = "bundle" if path.suffix == BUNDLE_SUFFIX else "ort"
    job = BenchJob(model=path, backends=tuple(dict.fromkeys(backends or (default,))),
                   tuning_db=tuning_db, **_measure_args(inputs, shapes, warmup, runs, min_time, max_time, threads,
                                   seed, target))
    addrs = _addresses(devices, all_devices, **device)
    if len(addrs) > 1:
        return _bench_fleet(job, addrs, json_path, csv_path, quiet)
    with Progress(quiet=quiet, max_duration_ms=job.settings.max_duration_ms, runs=runs) as progress:
        results = run_bench(job, addrs[0], progress.task)
    for res in results:
        name = res["backend"]["name"]
        if json_path:
            result.write_json(res, _per_backend(json_path, name, len(results)))
        if csv_path:
            result.write_csv(res, _per_backend(csv_path, name, len(results)))
    side_by_side(results, Console())


def _bench_fleet(job: Any, addrs: list[Any], json_path: Path | None, csv_path: Path | None,
                 quiet: bool) -> None:
    from rich.console import Console

    from edgert.fleet import bench_fleet, write_results
    from edgert.progress import Progress
    from edgert.render import side_by_side

    with Progress(quiet=quiet, max_duration_ms=job.settings.max_duration_ms,
                  runs=job.settings.runs) as progress:
        entries = bench_fleet(job, addrs, progress.task)
    summary = write_results(entries, json_path, csv_path)
    console = Console()
    for entry in entries:
        if entry.ok:
            console.rule(entry.device)
            side_by_side(entry.results, console)
    for error in summary["errors"]:
        click.echo(f"edgert: error: {error['device']}: {error['message']}", err=True)
    if summary["errors"]:
        sys.exit(1)


@cli.command()
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
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the edgert.sweep/1 result file.")
@device_options
def sweep(model: str, backend: str, cpu_freqs: str | None, cpu_policies: tuple[str, ...],
          gpu_freqs: str | None, gpu_device: str | None, emulated_levels: str | None, power: str,
          sample_rate: float, idle_s: float, cool_below: float | None, cool_timeout: float,
          sysfs_root: str | None, json_path: Path | None, inputs: tuple[str, ...],
          shapes: tuple[str, ...], warmup: int, runs: int | None, min_time: float, max_time: float,
          threads: int | None, seed: int, target: str, **device: Any) -> None:
    """Measure MODEL at each CPU/GPU clock (or emulated level): latency, power, energy.

    Every sysfs file the sweep changes is restored afterwards (also after a crash, from the
    journal, when the next sweep or agent starts).
    """
    from edgert import result
    from edgert.sweep import SweepJob, parse_freqs, parse_levels, summary_lines, sweep as run_sweep
    from edgert.zoo import resolve as resolve_model

    job = SweepJob(model=resolve_model(model), backend=backend,
                   cpu_freqs=parse_freqs(cpu_freqs, "kHz"), cpu_policies=cpu_policies,
                   gpu_freqs=parse_freqs(gpu_freqs, "Hz"), gpu_device=gpu_device,
                   emulated_levels=parse_levels(emulated_levels), power=power,
                   sample_rate_hz=sample_rate, idle_s=idle_s, cool_below_c=cool_below,
                   cool_timeout_s=cool_timeout, sysfs_root=sysfs_root,
                   **_measure_args(inputs, shapes, warmup, runs, min_time, max_time, threads,
                                   seed, target))

    def progress(data: dict[str, Any]) -> None:
        if "setting" in data:
            s = data["setting"]
            click.echo(f"[{data['point'] + 1}/{data['points']}] {s['domain']} = {s['requested']} "
                       f"{s['unit']}", err=True)

    res = run_sweep(job, _address(**device), progress)
    if json_path:
        result.write_json(res, json_path)
    for line in summary_lines(res):
        click.echo(line)
    for warning in res["warnings"]:
        click.echo(f"warning: {warning}", err=True)


@cli.command(name="compile")
@click.argument("model")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Bundle file [default: MODEL with .edgert].")
@click.option("--backend", type=click.Choice(["auto", "tvm", "ort"]), default="auto", show_default=True,
              help="Engine per segment; auto measures each segment on each engine here, then "
                   "that bundle against the whole model as one ORT call, and keeps the faster.")
@click.option("--target", default="host", show_default=True,
              help="host, aarch64 (Raspberry Pi 4/5, Jetson), or a TVM target as JSON.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Compiled-segment cache [default: ~/.cache/edgert].")
@click.option("--tuning-db", type=click.Path(path_type=Path), default=None,
              help="Apply this edgert tune database to TVM segments.")
@click.option("--samples", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Sample inputs as an .npz (arrays named like the inputs, or CASE/INPUT for "
                   "several), used instead of random ones at compile time.")
def compile_cmd(model: str, output: Path | None, backend: str, target: str,
                cache_dir: Path | None, tuning_db: Path | None, samples: Path | None) -> None:
    """Split a (dynamic) ONNX model into static segments plus a host program: one bundle."""
    from edgert.dynamic import compile as compile_bundle
    from edgert.dynamic import inspect as inspect_bundle
    from edgert.dynamic.validate import load_cases
    from edgert.zoo import resolve as resolve_model

    feeds = [case for _, case in load_cases(samples)] if samples is not None else None
    out = compile_bundle(resolve_model(model), backend=backend, target=target, out=output,
                         cache_dir=cache_dir, tuning_db=tuning_db, samples=feeds)
    manifest = inspect_bundle(out)
    engines = sorted({s["engine"] for s in manifest["segments"]})
    click.echo(f"{out}: {len(manifest['segments'])} segments on {', '.join(engines) or 'host only'}, "
               f"target {manifest['target']}")
    if manifest.get("host_folded"):
        click.echo(f"  {len(manifest['host_folded'])} segment(s) folded into the host program "
                   f"(kernel-less, or in a branch a constant If never takes)")
    for seg in manifest["segments"]:
        if seg["choice"].get("fallback_from"):
            click.echo(f"  {seg['id']} runs on ORT: TVM could not build it ({seg['choice']['failed'][0]})")
        if "tuning" in seg:
            tuned = seg["tuning"]
            click.echo(f"  {seg['id']}: {len(tuned['tuned_functions'] or [])}/"
                       f"{tuned['functions'] or '?'} TVM kernels tuned"
                       + (" (records timed under emulation)" if tuned.get("emulated") else ""))
    if "guarded" in manifest:
        click.echo(f"  guarded program (segments g_*, all TVM) runs when "
                   f"{', '.join(manifest['guarded']['guard'])} equal the samples' values")
    elif "guard_skipped" in manifest:
        click.echo(f"  no guarded program: {manifest['guard_skipped']}")
    auto = manifest.get("auto")
    if auto:
        times = ", ".join(f"{k} {v:.3f} ms" for k, v in sorted(auto.get("measured_ms", {}).items()))
        click.echo(f"  auto kept the {auto['chosen'].replace('_', ' ')} bundle"
                   f"{f' ({times})' if times else ''}: {auto['reason']}")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--reference", type=click.Path(path_type=Path), required=True,
              help="The original ONNX model, run with ONNX Runtime as the reference.")
@click.option("--cases", type=click.Path(path_type=Path), default=None, help="Inputs as an .npz file.")
@click.option("--random", "random_cases", default=0, show_default=True, help="Also this many random inputs.")
@click.option("--force-paths", is_flag=True, help="Fail unless every branch was taken.")
@click.option("--shape", "shapes", multiple=True, metavar="DIM=SIZE", help="Symbolic dimension sizes.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the validation report.")
def validate(bundle: Path, reference: Path, cases: Path | None, random_cases: int,
             force_paths: bool, shapes: tuple[str, ...], json_path: Path | None) -> None:
    """Differential test of a bundle against ONNX Runtime on the original model."""
    import json

    from edgert.dynamic import validate as run_validate

    report = run_validate(bundle, reference, cases=cases, random=random_cases,
                          force_paths=force_paths, dims=_dims(shapes))
    if json_path:
        json_path.write_text(json.dumps(report, indent=1) + "\n")
    click.echo(f"{report['status']}: {len(report['cases'])} inputs, max abs error "
               f"{report['max_abs_error']:.3g}, max rel error {report['max_rel_error']:.3g}")
    click.echo(f"paths taken: {', '.join(sorted(report['paths']))}")
    if set(report["programs"]) != {"main"}:
        runs = ", ".join(f"{name} x{n}" for name, n in sorted(report["programs"].items()))
        click.echo(f"programs run: {runs}")
    if report["segments_not_exercised"]:
        click.echo(f"segments never run: {', '.join(report['segments_not_exercised'])}")
    if report["branches_not_taken"]:
        click.echo(f"branches never taken: {report['branches_not_taken']}")
    if report["control_flow_in_engine"]:
        click.echo(f"control flow run inside the engine (branches not visible): "
                   f"{', '.join(report['control_flow_in_engine'])}")
    for case in report["near_threshold"]:
        click.echo(f"near a threshold (within numerical noise): {case}")
    sys.exit(report["exit_code"])


@cli.command()
@click.argument("model")
@device_options
def push(model: str, **device: Any) -> None:
    """Upload MODEL (or a bundle) to a device's store; resumes an interrupted upload."""
    from edgert.devices.connect import open_client
    from edgert.zoo import resolve as resolve_model

    path = resolve_model(model)
    with open_client(_address(**device)) as client:
        sha = client.upload(path)
    click.echo(f"{path} is on {device['device']} as {sha}")


@cli.group(name="device")
def device_group() -> None:
    """Inspect devices."""


@device_group.command(name="info")
@click.option("--sysfs-root", default=None, help="Read sysfs under this directory (fixtures, tests).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the facts as JSON.")
@device_options
def device_info(sysfs_root: str | None, json_path: Path | None, **device: Any) -> None:
    """Print a device's CPU, frequency domains, power rails and temperatures."""
    import json

    from edgert.devices.info import collect_info, render_info

    info = collect_info(_address(**device), sysfs_root)
    if json_path:
        json_path.write_text(json.dumps(info, indent=1) + "\n")
    render_info(info)


@cli.command()
@click.option("--stdio", "mode", flag_value="stdio", help="Speak the protocol on stdin/stdout (SSH).")
@click.option("--serial", "serial_dev", default=None, help="Serve on this serial device.")
@click.option("--baud", default=115200, show_default=True, help="Serial line rate.")
@click.option("--listen", default=None, metavar="HOST:PORT", help="Serve on TCP (needs --token-file).")
@click.option("--token-file", type=click.Path(path_type=Path), default=None,
              help="Shared secret for --listen.")
@click.option("--store", "store_dir", type=click.Path(path_type=Path), default=None,
              help="Artifact store directory [default: ~/.local/share/edgert/store].")
@click.option("--store-quota-mb", default=2048, show_default=True, help="Evict old artifacts above this.")
@click.option("--sysfs-root", default="/", show_default=True, help="sysfs root (fixtures, tests).")
@click.option("--emulated", is_flag=True, help="This board is an emulator: label every number.")
def agent(mode: str | None, serial_dev: str | None, baud: int, listen: str | None,
          token_file: Path | None, store_dir: Path | None, store_quota_mb: int, sysfs_root: str,
          emulated: bool) -> None:
    """Run the device agent (on the board)."""
    from device_agents import serve
    from device_agents.agent import Agent, default_store_dir
    from device_agents.store import ArtifactStore

    chosen = [m for m in (mode, serial_dev, listen) if m]
    if len(chosen) != 1:
        raise UsageError("choose exactly one of --stdio, --serial DEV, --listen HOST:PORT")
    from device_agents.dvfs import replay_journal
    from device_agents.sweep import default_journal_path

    undone = replay_journal(default_journal_path())  # a sweep that crashed left clocks pinned
    if undone:
        click.echo(f"edgert agent: restored {undone} DVFS setting(s) left by a crashed sweep", err=True)
    store = ArtifactStore(store_dir or default_store_dir(), quota_bytes=store_quota_mb << 20)
    the_agent = Agent(store, sysfs_root=sysfs_root, emulated=emulated)
    if mode == "stdio":
        serve.serve_stdio(the_agent)
    elif serial_dev:
        serve.serve_serial(the_agent, serial_dev, baud)
    else:
        host, _, port = (listen or "").rpartition(":")
        if not host or not port.isdigit() or token_file is None:
            raise UsageError("--listen needs HOST:PORT and --token-file")
        serve.serve_tcp(the_agent, host, int(port), serve.read_token(token_file))


@cli.command()
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
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the tuning summary (tasks, trials, best latency per task).")
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

    from backends.tvm_target import resolve_target
    from backends.tvm_tune import agent_timer, format_progress, summary_json, tune_model
    from edgert.dynamic.tune import tune_bundle
    from edgert.zoo import resolve as resolve_model

    path = resolve_model(model)
    if path.suffix not in (".onnx", ".edgert"):
        raise UsageError(f"edgert tune takes an .onnx model or an .edgert bundle, not {path.name}")
    addr = _address(**device)
    last = [0.0]

    def show(p: Any) -> None:
        if quiet:
            return
        if sys.stderr.isatty():
            sys.stderr.write("\r\033[K" + format_progress(p))
        elif p.elapsed_s - last[0] >= 10:
            last[0] = p.elapsed_s
            sys.stderr.write(format_progress(p) + "\n")
        sys.stderr.flush()

    with contextlib.ExitStack() as stack:
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
    if not quiet and sys.stderr.isatty():
        sys.stderr.write("\n")
    if json_path:
        json_path.write_text(summary_json(summary) + "\n")
    measured = [t for t in summary.tasks if t.best_us is not None]
    best = sum(t.weight * t.best_us for t in measured) / 1e3
    name = path.name
    if path.suffix == ".edgert":
        name += f" (TVM segments {', '.join(sorted({m for t in summary.tasks for m in t.models}))})"
    label = " [EMULATED: timed under emulation, not the board's speed]" if summary.emulated else ""
    click.echo(f"{name}: {len(measured)}/{len(summary.tasks)} tasks tuned, {summary.trials} trials "
               f"in {summary.elapsed_s:.0f} s (stopped by {summary.stopped_by}); "
               f"tuned kernels {best:.3f} ms{label}; database {db}")


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated numbers, got {text!r}") from None


@cli.command()
@click.argument("model")
@click.option("--ratios", default="0,0.25,0.5,0.75", show_default=True,
              help="Fractions of channels removed, increasing; 0 keeps the full model.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The All-in-One weight+mask file (safetensors layout).")
@click.option("--importance", type=click.Choice(["auto", "bn", "l1", "l2"]), default="auto",
              show_default=True, help="Channel importance: BN scale where BN survives, else weight norms.")
@click.option("--channel-multiple", default=1, show_default=True,
              help="Keep channel counts a multiple of this (SIMD-friendly widths).")
def prune(model: str, ratios: str, output: Path, importance: str, channel_multiple: int) -> None:
    """Write one file holding every pruning ratio of MODEL as nested channel prefixes."""
    from edgert.variants.prune import prune as run_prune
    from edgert.zoo import resolve as resolve_model

    report = run_prune(resolve_model(model), _floats(ratios, "--ratios"), output,
                       importance_method=importance, multiple=channel_multiple)
    click.echo(f"{report.path}: {report.file_bytes} bytes ({report.file_bytes / report.model_bytes:.2f}x "
               "the model's weights)")
    for level in report.levels:
        click.echo(f"  ratio {level['ratio']:g}: {level['weight_bytes']} weight bytes")
    for skipped in report.skipped:
        click.echo(f"warning: group {skipped['group']} kept whole: {skipped['reason']}", err=True)


@cli.command()
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
@click.option("--accuracy", "accuracy_path", type=click.Path(path_type=Path), default=None,
              metavar="ACC.json", help='Store the levels\' accuracy, {"0.0": 0.97, "0.5": 0.95, ...} '
                                       "(alone, or with a measurement).")
@device_options
def calibrate(file: Path, cpu_freqs: str | None, cpu_policies: tuple[str, ...], emulated_levels: str | None,
              power: str, idle_s: float, sysfs_root: str | None, threads: int | None, max_time: float,
              accuracy_path: Path | None, **device: Any) -> None:
    """Measure every level of an All-in-One FILE at every setting on --device (latency, and power
    and energy when the device has a sensor); store the table in FILE."""
    from edgert.settings import BenchSettings
    from edgert.sweep import SweepJob, parse_freqs, parse_levels
    from edgert.variants.accuracy import read_accuracy_json, store_accuracy
    from edgert.variants.calibrate import calibrate_device

    if accuracy_path is not None:
        table = store_accuracy(file, read_accuracy_json(accuracy_path))
        click.echo(f"{file}: accuracy stored for {len(table)} levels")
        if not (cpu_freqs or emulated_levels):
            return
    if bool(cpu_freqs) == bool(emulated_levels):
        raise UsageError("choose one of --cpu-freqs all|LIST and --emulated LEVELS")
    bench = BenchSettings(warmup_runs=3, min_duration_ms=min(300.0, max_time * 1000),
                          max_duration_ms=max_time * 1000, threads=threads)
    job = SweepJob(model=file, settings=bench, cpu_freqs=parse_freqs(cpu_freqs, "kHz"),
                   cpu_policies=cpu_policies, emulated_levels=parse_levels(emulated_levels),
                   power=power, idle_s=idle_s, sysfs_root=sysfs_root)

    def progress(data: dict[str, Any]) -> None:
        if "setting" in data:
            s = data["setting"]
            click.echo(f"[{data['point'] + 1}/{data['points']}] {s['domain']} = {s['requested']} "
                       f"{s['unit']}", err=True)

    cal = calibrate_device(job, _address(**device), progress=progress)
    energy = f", energy per inference from {cal['power_source']}" if "energy_mj" in cal else ""
    click.echo(f"{file}: calibration table stored in the file ({len(cal['p50_ms'])} levels x "
               f"{len(cal['frequencies'])} settings{energy})")
    for warning in cal["warnings"]:
        click.echo(f"warning: {warning}", err=True)


@cli.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--alpha", default=0.01, show_default=True, help="Significance level.")
@click.option("--allow-different-models", is_flag=True, help="Compare results of different models.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(a: Path, b: Path, alpha: float, allow_different_models: bool, as_json: bool) -> None:
    """Is B faster or slower than A? Mann-Whitney U on the raw samples, in plain words."""
    import json

    from edgert.compare import compare as run_compare, render_compare
    from edgert.result import read_json

    report = run_compare(read_json(a), read_json(b), alpha,
                         allow_different_models=allow_different_models)
    click.echo(json.dumps(report, indent=1) if as_json else render_compare(report))


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("report.html"),
              show_default=True, help="The HTML file (plots are written beside it too).")
def report(results: tuple[Path, ...], output: Path) -> None:
    """Render result, sweep and calibration files into one self-contained HTML report."""
    from edgert.report import render_report

    click.echo(str(render_report(list(results), output)))


def _per_backend(path: Path, backend: str, count: int) -> Path:
    return path if count == 1 else path.with_name(f"{path.stem}.{backend}{path.suffix}")


def main(argv: list[str] | None = None) -> Any:
    """Entry point: EdgertError -> one line on stderr and its exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        return cli.main(args=args, prog_name="edgert", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("edgert: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EdgertError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"edgert: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("edgert: interrupted", err=True)
        sys.exit(130)
