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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="edgert")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Compile, deploy and measure neural networks on Linux edge boards."""
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("model")
@click.option("--backend", "backends", multiple=True, default=("ort",), show_default=True,
              help="Engine: ort, tvm, tflite or null (repeat to compare side by side).")
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy",
              help="Feed an input from a .npy file instead of seeded random data.")
@click.option("--shape", "shapes", multiple=True, metavar="DIM=SIZE",
              help="Size of a symbolic dimension, e.g. --shape N=4.")
@click.option("--warmup", default=5, show_default=True, help="Warm-up runs, discarded.")
@click.option("--runs", type=int, default=None, help="Measure exactly this many runs (no adaptive stop).")
@click.option("--min-time", default=1.0, show_default=True, help="Seconds to measure at least.")
@click.option("--max-time", default=10.0, show_default=True, help="Seconds to measure at most.")
@click.option("--threads", type=int, default=None, help="Engine threads (default: the engine's).")
@click.option("--seed", default=0, show_default=True, help="Seed for random inputs and the bootstrap.")
@click.option("--target", default="host", show_default=True, help="TVM target: host or aarch64.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the result file (one per backend: NAME.BACKEND.json when several).")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None,
              help="Write raw samples as CSV (same naming as --json).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def bench(model: str, backends: tuple[str, ...], inputs: tuple[str, ...], shapes: tuple[str, ...],
          warmup: int, runs: int | None, min_time: float, max_time: float, threads: int | None,
          seed: int, target: str, json_path: Path | None, csv_path: Path | None, quiet: bool) -> None:
    """Measure MODEL's latency on this machine."""
    from rich.console import Console

    from edgert import result
    from edgert.bench import BenchJob, bench_local
    from edgert.models import resolve_model
    from edgert.progress import Progress
    from edgert.render import side_by_side
    from edgert.settings import BenchSettings

    settings = BenchSettings(warmup_runs=warmup, runs=runs, min_duration_ms=min_time * 1000,
                             max_duration_ms=max_time * 1000, threads=threads, seed=seed)
    job = BenchJob(model=resolve_model(model), backends=tuple(dict.fromkeys(backends)),
                   settings=settings, dims=_dims(shapes),
                   input_files={k: Path(v) for k, v in _pairs(inputs, "--input").items()},
                   target=target)
    with Progress(quiet=quiet, max_duration_ms=settings.max_duration_ms, runs=runs) as progress:
        results = bench_local(job, progress.task)
    for res in results:
        name = res["backend"]["name"]
        if json_path:
            result.write_json(res, _per_backend(json_path, name, len(results)))
        if csv_path:
            result.write_csv(res, _per_backend(csv_path, name, len(results)))
    side_by_side(results, Console())


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
