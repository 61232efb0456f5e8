"""`edgert compile` and `edgert validate`: dynamic networks as bundles."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edgert.commands.options import (ZooOrPath, address_from, device_options, output_option, parse_dims,
                                     refuse_overwriting_inputs, write_json_output)
from edgert.device_facts import describe
from edgert.errors import UsageError


@click.command(name="compile")
@click.argument("model")
@output_option("-o", "--output", default=None,
              help="Bundle file [default: MODEL with .edgert].")
@click.option("--backend", type=click.Choice(["auto", "tvm", "tflite", "ort"]), default="auto",
              show_default=True,
              help="Engine per segment (tvm/tflite: ORT runs the segments they cannot build); "
                   "auto times each segment on each engine, then that "
                   "bundle against the whole model as one ORT call, and keeps the faster: here "
                   "for --target host, on --device for a board (required for another target).")
@click.option("--target", default="host", show_default=True,
              help="host, aarch64 (Raspberry Pi 4/5, Jetson), or a TVM target as JSON.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Compiled-segment cache [default: $EDGERT_CACHE, else ~/.cache/edgert].")
@click.option("--tuning-db", type=click.Path(path_type=Path), default=None,
              help="Apply this edgert tune database to TVM segments.")
@click.option("--samples", type=ZooOrPath(), default=None,
              help="Sample inputs as an .npz (arrays named like the inputs, or CASE/INPUT for "
                   "several), used instead of random ones at compile time.")
@click.option("--keep-candidates", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write every candidate auto timed here, as a bundle with the inputs it was "
                   "timed on (NAME.inputs.npz), to re-time them with edgert bench; a file "
                   "INCOMPLETE there means the compile stopped before timing them all.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@device_options
def compile_cmd(model: str, output: Path | None, backend: str, target: str,
                cache_dir: Path | None, tuning_db: Path | None, samples: Path | None,
                keep_candidates: Path | None, quiet: bool, **device: Any) -> None:
    """Split a (dynamic) ONNX model into static segments plus a host program: one bundle."""
    import contextlib

    from edgert.dynamic import compile as compile_bundle
    from edgert.dynamic.candidates import prepare_keep_dir
    from edgert.dynamic.compiler import check_options
    from edgert.dynamic import inspect as inspect_bundle
    from edgert.dynamic.summary import manifest_lines
    from edgert.tensors import load_cases
    from edgert.zoo import resolve as resolve_model

    from edgert.progress import Progress

    feeds = [case for _, case in load_cases(samples)] if samples is not None else None
    addr = address_from(**device)
    if addr.scheme != "local" and backend != "auto":
        raise UsageError(f"--device times auto's candidates; --backend {backend} times nothing "
                         f"(leave out --device, or use --backend auto)")
    path = resolve_model(model)
    refuse_overwriting_inputs(output, [path, *([samples] if samples else []), *([tuning_db] if tuning_db else [])],
                              "-o")
    check_options(backend, target)  # before "compiling" is shown
    prepare_keep_dir(keep_candidates)
    what = "measuring each segment on each engine" if backend == "auto" else f"segments on {backend}"
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(Progress(quiet=quiet))
        timer = None
        if addr.scheme != "local":
            from edgert.devices.connect import open_client
            from edgert.devices.timer import DeviceTimer

            timer = DeviceTimer(stack.enter_context(open_client(addr)), emulated=addr.emulated)
        stack.callback(progress.step(f"compiling {path.name} for {target} ({what})").close)
        out = compile_bundle(path, backend=backend, target=target, out=output,
                             cache_dir=cache_dir, tuning_db=tuning_db, samples=feeds, timer=timer,
                             keep_candidates=keep_candidates)
    for line in manifest_lines(out, inspect_bundle(out)):
        click.echo(line)


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--reference", type=ZooOrPath(), required=True,
              help="The original ONNX model (or zoo:NAME), run with ONNX Runtime as the reference.")
@click.option("--cases", type=ZooOrPath(), default=None, help="Inputs as an .npz file (or zoo:NAME.npz).")
@click.option("--random", "random_cases", default=0, show_default=True, help="Also this many random inputs.")
@click.option("--force-paths", is_flag=True, help="Fail unless every branch was taken.")
@click.option("--shape", "shapes", multiple=True, metavar="DIM=SIZE", help="Symbolic dimension sizes.")
@click.option("--rtol", type=float, default=1e-3, show_default=True,
              help="Relative tolerance of the output comparison.")
@click.option("--atol", type=float, default=1e-4, show_default=True,
              help="Absolute tolerance of the output comparison.")
@output_option("--json", "json_path", default=None, metavar="PATH|-",
              help="Write the validation report.")
@device_options
def validate(bundle: Path, reference: Path, cases: Path | None, random_cases: int,
             force_paths: bool, shapes: tuple[str, ...], rtol: float, atol: float,
             json_path: Path | None, **device: Any) -> None:
    """Differential test of a bundle against ONNX Runtime on the original model.

    The reference always runs here; the bundle runs on --device (default: here), so a
    bundle cross-compiled for a board is checked on that board."""
    from edgert.devices.execute import case_runner
    from edgert.dynamic.validate import validate as run_validate

    refuse_overwriting_inputs(json_path, [bundle, reference, *([cases] if cases else [])], "--json")
    with case_runner(address_from(**device), bundle, "bundle") as (runner, facts):
        report = run_validate(bundle, reference, cases=cases, random=random_cases,
                              force_paths=force_paths, dims=parse_dims(shapes), rtol=rtol,
                              atol=atol, runner=runner, device=facts)
    if json_path:
        write_json_output(report, json_path)
    err = str(json_path) == "-"  # stdout holds the JSON alone
    click.echo(f"{report['status']}: {len(report['cases'])} inputs, max abs error "
               f"{report['max_abs_error']:.3g}, max rel error {report['max_rel_error']:.3g} "
               f"(rtol {rtol:g}, atol {atol:g})", err=err)
    click.echo(f"bundle ran on: {describe(facts)}", err=err)
    click.echo(f"paths taken: {', '.join(sorted(report['paths']))}", err=err)
    if set(report["programs"]) != {"main"}:
        runs = ", ".join(f"{name} x{n}" for name, n in sorted(report["programs"].items()))
        click.echo(f"programs run: {runs}", err=err)
    if report["segments_not_exercised"]:
        click.echo(f"segments never run: {', '.join(report['segments_not_exercised'])}", err=err)
    if report["branches_not_taken"]:
        click.echo(f"branches never taken: {report['branches_not_taken']}", err=err)
    if report["control_flow_in_engine"]:
        click.echo(f"control flow run inside the engine (branches not visible): "
                   f"{', '.join(report['control_flow_in_engine'])}", err=err)
    for case in report["near_threshold"]:
        click.echo(f"near a threshold (within numerical noise): {case}", err=err)
    for case in report["cases"]:
        if not case["ok"] and not case.get("near_threshold"):
            why = case.get("error") or case.get("mismatch") or f"max abs error {case['max_abs_error']:.3g}"
            path = f" on path {case['path']}" if "path" in case else ""
            click.echo(f"failed: {case['case']}: {why}{path}", err=err)
    sys.exit(report["exit_code"])
