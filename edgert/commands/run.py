"""`edgert run`: run a model or bundle once per input on a device and bring the outputs back."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgert.device_facts import describe as describe_device
from edgert.atomic import replace_file
from edgert.commands.options import (ZooOrPath, address_from, device_options, output_option, parse_pairs,
                                     refuse_overwriting_inputs, write_json_output)
from edgert.errors import UsageError


@click.command()
@click.argument("model")
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy",
              help="One input from a .npy file (repeat for each input).")
@click.option("--cases", type=ZooOrPath(), default=None,
              help="Several inputs as an .npz (arrays named like the inputs, or CASE/INPUT; or zoo:NAME.npz).")
@output_option("-o", "--output", required=True,
               help="Write the outputs here as an .npz (OUTPUT, or CASE/OUTPUT with --cases).")
@click.option("--backend", default=None,
              help="Engine for a model file [default: ort; a bundle runs its own engines].")
@click.option("--target", default="host", show_default=True, help="TVM target: host or aarch64.")
@output_option("--json", "json_path", default=None, metavar="PATH|-",
               help="Also write where it ran and, per input, the path a bundle took.")
@device_options
def run(model: str, inputs: tuple[str, ...], cases: Path | None, output: Path,
        backend: str | None, target: str, json_path: Path | None, **device: Any) -> None:
    """Run MODEL (or a bundle) on --device and write its outputs (and a bundle's path)."""
    import numpy as np

    from edgert.devices.execute import case_runner
    from edgert.tensors import check_cases, load_cases
    from edgert.runner import BUNDLE_SUFFIX
    from edgert.tensors import load_feeds
    from edgert.zoo import resolve as resolve_model

    if bool(inputs) == bool(cases):
        raise UsageError("pass the inputs either as --input NAME=FILE.npy or as --cases FILE.npz")
    if backend == "null":  # it answered for a made-up model (its inputs named x, y)
        raise UsageError("the null backend runs no model (bench uses it to time the harness alone): "
                         "run MODEL needs an engine, e.g. --backend ort")
    path = resolve_model(model)
    read = [path, *([cases] if cases else []), *(Path(v.partition("=")[2]) for v in inputs if "=" in v)]
    for option, written in (("-o", output), ("--json", json_path)):
        refuse_overwriting_inputs(written, read, option)  # -o C.npz replaced the cases with outputs
    bundle = path.suffix == BUNDLE_SUFFIX
    if bundle and backend not in (None, "bundle"):
        raise UsageError(f"{path.name} is a bundle: its engines were chosen at compile time "
                         f"(leave out --backend)")
    todo = (load_cases(cases) if cases is not None
            else [("", load_feeds({k: Path(v) for k, v in parse_pairs(inputs, "--input").items()}))])
    if bundle and cases is not None:  # its inputs are in its manifest: every case checked before any runs
        from edgert.backends import TensorSpec
        from edgert.dynamic import inspect

        check_cases([TensorSpec.from_dict(d) for d in inspect(path)["inputs"]], todo)
    with case_runner(address_from(**device), path, "bundle" if bundle else backend or "ort",
                     target) as (runner, facts):
        records = runner([feeds for _, feeds in todo])
    arrays: dict[str, np.ndarray] = {}
    summary: list[dict[str, Any]] = []
    for (case, _), record in zip(todo, records):
        prefix = f"{case}/" if cases is not None else ""
        if "error" in record:
            who = f"case {case!r}" if cases is not None else "the input"
            raise UsageError(f"{who} was refused by the {'bundle' if bundle else 'model'}: {record['error']}")
        arrays.update({prefix + name: value for name, value in zip(record["names"], record["outputs"])})
        shapes = ", ".join(f"{n} {list(np.shape(v))}" for n, v in zip(record["names"], record["outputs"]))
        path_taken = f"  path: {record['path']['key']}" if "path" in record else ""
        summary.append({"case": case or None, "outputs": record["names"],
                        "path": record["path"] if "path" in record else None})
        click.echo(f"{case or 'outputs'}: {shapes}{path_taken}", err=str(json_path) == "-")
    # to the name given (np.savez on a path adds .npz), whole or not at all
    replace_file(output, lambda fh: np.savez(fh, **arrays))
    if json_path is not None:
        write_json_output({"schema": "edgert.run/1", "model": str(path), "device": facts, "cases": summary},
                          json_path)
    click.echo(f"wrote {output} (ran on {describe_device(facts)})", err=str(json_path) == "-")
