"""`edgert bench`: latency of a model on one device or a fleet."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click

from edgert.commands.options import (
    addresses_from, fleet_device_options, measure_args, measure_options, output_option, refuse_overwriting_inputs,
    write_json_output)
from edgert.errors import UsageError


@click.command()
@click.argument("models", metavar="MODEL...", nargs=-1, required=True)
@click.option("--backend", "backends", multiple=True,
              help="Engine: ort (default), tvm, tflite or null; repeat to compare side by side. "
                   "Bundles (.edgert) run with their own engines: bundle.")
@measure_options
@output_option("--json", "json_path", default=None, metavar="PATH|-",
              help="Write the result file (one per backend: NAME.BACKEND.json when several); - prints "
                   "it on stdout (a list when several) and the table on stderr.")
@output_option("--csv", "csv_path", default=None,
              help="Write raw samples as CSV (same naming as --json).")
@click.option("--scenario", type=click.Choice(["single-stream", "offline", "server"]),
              default="single-stream", show_default=True,
              help="MLPerf LoadGen's: one query after another; offline: all at once, throughput "
                   "with --concurrency workers; server: Poisson arrivals at --rate, latency incl. queueing.")
@click.option("--rate", "rate_qps", type=float, default=None, metavar="QPS",
              help="Server scenario: mean arrival rate (queries per second).")
@click.option("--concurrency", type=int, default=1, show_default=True,
              help="Offline/server: workers, each with its own session.")
@click.option("--cases", "cases_path", default=None, metavar="F.npz",
              help="Cycle the runs through these inputs (arrays INPUT or CASE/INPUT, as for validate; "
                   "zoo:NAME.npz for a zoo model's): latency per case and, for bundles, per path.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--block-runs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Several MODELs: runs of one before the next one's turn (ABBA blocks).")
@click.option("--tuning-db", type=click.Path(path_type=Path), default=None,
              help="TVM: apply this MetaSchedule database (from edgert tune --db).")
@fleet_device_options
def bench(models: tuple[str, ...], backends: tuple[str, ...], json_path: Path | None,
          csv_path: Path | None, scenario: str, rate_qps: float | None, concurrency: int,
          cases_path: str | None, quiet: bool, block_runs: int,
          tuning_db: Path | None, inputs: tuple[str, ...], shapes: tuple[str, ...], warmup: int,
          runs: int | None, min_time: float, max_time: float, threads: int | None, seed: int,
          target: str, devices: tuple[str, ...], all_devices: bool, **device: Any) -> None:
    """Measure MODEL's latency on a device (this machine by default), or on many at once.

    MODEL is an .onnx/.tflite file, a bundle, or zoo:NAME for a bundled model. With several
    devices each board runs its own session in parallel; --json r.json then writes
    r.BOARD.json per board and the summary r.fleet.json, and a failed board is reported
    without stopping the others (exit code 1 if any failed).

    Several MODELs (one backend, one device) are timed interleaved by one process, in
    blocks of --block-runs runs in ABBA rounds, --runs each (default 20), so load drift
    costs them alike; --json r.json writes r.MODEL.json per model. They run as given (a bundle,
    .onnx on ort, a TVM .so, a .tflite), without compiling here (docs/interleaved-timing.md).
    """
    from rich.console import Console

    from edgert import result
    from edgert.bench import BenchJob, EngineFailure, bench as run_bench
    from edgert.progress import Progress
    from edgert.render import side_by_side
    from edgert.zoo import resolve as resolve_model

    from edgert.runner import BUNDLE_SUFFIX

    if json_path and csv_path and str(json_path) != "-" and Path(json_path).resolve() == Path(csv_path).resolve():
        raise UsageError(f"--json and --csv are both {json_path}: the CSV would replace the result")
    read = [*(resolve_model(m) for m in models), *([Path(cases_path)] if cases_path else []),
            *(Path(v.partition("=")[2]) for v in inputs if "=" in v), *([tuning_db] if tuning_db else [])]
    for option, written in (("--json", json_path), ("--csv", csv_path)):
        refuse_overwriting_inputs(written, read, option)  # --json B.edgert replaced the bundle
    if len(models) > 1:
        return _bench_interleaved(models, backends, json_path, csv_path, cases_path, quiet,
                                  block_runs, scenario, concurrency, devices, all_devices,
                                  measure_args(inputs, shapes, warmup, runs, min_time, max_time,
                                               threads, seed, target), device)
    (model,) = models
    path = resolve_model(model)
    default = "bundle" if path.suffix == BUNDLE_SUFFIX else "ort"
    measured = measure_args(inputs, shapes, warmup, runs, min_time, max_time, threads, seed, target)
    measured["settings"] = dataclasses.replace(measured["settings"], scenario=scenario, rate_qps=rate_qps,
                                               concurrency=concurrency)
    job = BenchJob(model=path, backends=tuple(dict.fromkeys(backends or (default,))),
                   tuning_db=tuning_db, cases=_read_cases(cases_path), **measured)
    addrs = addresses_from(devices, all_devices, **device)
    to_stdout = str(json_path) == "-"
    if len(addrs) > 1:
        if to_stdout:
            raise UsageError("--json - prints one device's results; with several devices give a file name")
        return _bench_fleet(job, addrs, json_path, csv_path, quiet)
    with Progress(quiet=quiet, max_duration_ms=job.settings.max_duration_ms, runs=runs) as progress:
        failures: list[EngineFailure] = []
        results = run_bench(job, addrs[0], progress.task,
                            failures=failures if len(job.backends) > 1 else None)
    if to_stdout:
        write_json_output(results[0] if len(job.backends) == 1 else results, "-")
    for res in results:
        name = res["backend"]["name"]
        if json_path and not to_stdout:
            result.write_json(res, _per_backend(json_path, name, len(job.backends)))
        if csv_path:
            result.write_csv(res, _per_backend(csv_path, name, len(job.backends)))
        if res["backend"]["options"].get("note"):
            click.echo(f"edgert: {res['backend']['options']['note']}", err=True)
    if results:
        side_by_side(results, Console(stderr=to_stdout))
        hint = untuned_tvm_hint(results, model, tuning_db)
        if hint and not quiet:
            click.echo(hint, err=True)
    for failure in failures:  # the others' results are shown and written above
        click.echo(f"edgert: error: {failure.backend}: {failure.error.message}", err=True)
    if failures:
        sys.exit(failures[0].error.exit_code)


def _bench_interleaved(models: tuple[str, ...], backends: tuple[str, ...], json_path: Path | None,
                       csv_path: Path | None, cases_path: str | None, quiet: bool, block_runs: int,
                       scenario: str, concurrency: int, devices: tuple[str, ...], all_devices: bool,
                       measured: dict[str, Any], device: dict[str, Any]) -> None:
    """Several MODELs timed interleaved (``edgert.devices.interleaved``), one result each."""
    from rich.console import Console

    from edgert import result
    from edgert.devices.interleaved import bench_interleaved
    from edgert.progress import Progress
    from edgert.render import side_by_side
    from edgert.runner import BUNDLE_SUFFIX
    from edgert.zoo import resolve as resolve_model

    paths = [resolve_model(m) for m in models]
    if len(backends) > 1:
        raise UsageError("several MODELs are timed with one --backend; bench one model with "
                         "several --backend to compare engines")
    if measured["dims"] or measured["input_files"]:
        raise UsageError("several MODELs take their inputs from --cases (or seeded random ones), "
                         "not --input/--shape")
    addrs = addresses_from(devices, all_devices, **device)
    if len(addrs) > 1:
        raise UsageError("several MODELs are timed interleaved on one device")
    backend = backends[0] if backends else ("bundle" if paths[0].suffix == BUNDLE_SUFFIX else "ort")
    settings = dataclasses.replace(measured["settings"], scenario=scenario, concurrency=concurrency)
    to_stdout = str(json_path) == "-"
    with Progress(quiet=quiet, max_duration_ms=settings.max_duration_ms, runs=None) as progress:
        results = bench_interleaved(paths, backend, settings, block_runs, _read_cases(cases_path),
                                    addrs[0], measured["target"], progress.task("interleaved"))
    if to_stdout:
        write_json_output(results, "-")
    for res, path in zip(results, paths):
        if json_path and not to_stdout:
            result.write_json(res, json_path.with_name(f"{json_path.stem}.{path.stem}{json_path.suffix}"))
        if csv_path:
            result.write_csv(res, csv_path.with_name(f"{csv_path.stem}.{path.stem}{csv_path.suffix}"))
    shown = [dict(res, backend=dict(res["backend"], name=path.name),
                  model=dict(res["model"], path=", ".join(p.name for p in paths) + " (interleaved)"))
             for res, path in zip(results, paths)]
    side_by_side(shown, Console(stderr=to_stdout))


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


def _per_backend(path: Path, backend: str, count: int) -> Path:
    return path if count == 1 else path.with_name(f"{path.stem}.{backend}{path.suffix}")


SLOW_UNTUNED = 3.0  # untuned TVM this many times ORT's p50 is worth a tuning run


def untuned_tvm_hint(results: list[dict[str, Any]], model: str, tuning_db: Path | None) -> str | None:
    """One line when TVM ran without a tuning database and is much slower than ORT beside it."""
    p50 = {r["backend"]["name"]: r["latency_ms"]["p50"] for r in results}
    if tuning_db is not None or "tvm" not in p50 or "ort" not in p50 or p50["tvm"] < SLOW_UNTUNED * p50["ort"]:
        return None
    return (f"hint: untuned TVM is {p50['tvm'] / p50['ort']:.0f}x slower than ORT here; tune it "
            f"(edgert tune {model} --db tune.db --time-budget 600) and bench with --tuning-db tune.db")


def _read_cases(spec: str | None) -> tuple[tuple[str, Any], ...]:
    """``--cases F.npz`` (or ``zoo:NAME.npz``) -> ((case, {input: array}), ...)."""
    if spec is None:
        return ()
    from edgert.tensors import load_cases
    from edgert.errors import UsageError
    from edgert.zoo import resolve

    path = resolve(spec) if spec.startswith("zoo:") else Path(spec)
    try:
        cases = tuple(load_cases(path))
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"--cases {spec}: cannot read it as an .npz of input arrays ({exc})") from None
    if not cases:
        raise UsageError(f"--cases {spec}: the file holds no arrays")
    return cases
