"""Options and argument parsing shared by the command groups (no measurement policy here)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from edgert.atomic import is_stream
from edgert.errors import UsageError


def parse_pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    """``("a=1", "b=2")`` -> ``{"a": "1", "b": "2"}`` with a clear error for a missing '='."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"{what} must look like NAME=VALUE, got {item!r}")
        if key in out and out[key] != value:  # the last one silently won
            raise UsageError(f"{what} {key} given twice ({key}={out[key]}, {key}={value}): give it once")
        out[key] = value
    return out


class ZooOrPath(click.ParamType):
    """A file the user names, or a bundled one: ``zoo:skipnet`` (a model), ``zoo:skipnet.npz``
    (its input cases), accepted wherever a command reads a model or inputs."""

    name = "FILE|zoo:NAME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        from edgert.zoo import resolve

        return value if isinstance(value, Path) else resolve(value) if str(value).startswith("zoo:") else Path(value)


MAX_DIM_SIZE = 2**31 - 1


def parse_dims(values: tuple[str, ...]) -> dict[str, int]:
    """``--shape N=4`` values -> {"N": 4}; each size a whole number from 1 to 2**31 - 1."""
    dims = {}
    for key, value in parse_pairs(values, "--shape").items():
        try:
            dims[key] = int(value)
        except ValueError:
            raise UsageError(f"--shape {key}= needs a whole number, got {value!r}") from None
        if not 1 <= dims[key] <= MAX_DIM_SIZE:
            raise UsageError(f"--shape {key}={value}: a dimension size must be 1..{MAX_DIM_SIZE}")
    return dims


def output_option(*decls: str, **kwargs: Any) -> Any:
    """A click option naming a file the command writes; checked before any work is done, so a
    typo does not cost a whole measurement. ``-`` (stdout) only where the metavar offers it
    (``PATH|-``); elsewhere it made a file named ``-``."""
    stdout_ok = "|-" in str(kwargs.get("metavar", ""))

    def writable(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
        if value is not None and str(value) == "-":
            if not stdout_ok:
                raise UsageError(f"{param.opts[-1]} - : this option writes a file, not stdout; give a path")
        elif value is not None:
            check_writable(value, param.opts[-1])
        return value

    return click.option(*decls, type=click.Path(path_type=Path), callback=writable, **kwargs)


def refuse_overwriting_inputs(output: Path | None, inputs: Any, what: str) -> None:
    """UsageError when ``output`` is one of the ``inputs`` (``compile m.onnx -o m.onnx`` replaced
    the model with its bundle; ``report r.json -o r.json`` the result with the page)."""
    if output is None or str(output) == "-" or not Path(output).exists():
        return
    for given in inputs:
        if Path(given).exists() and Path(given).samefile(output):
            raise UsageError(f"{what} {output} is also an input: it would be overwritten; write elsewhere",
                             path=str(output))


def check_writable(path: Path, what: str) -> None:
    """UsageError unless ``path`` can be created or overwritten (a probe open, undone).

    Missing parent directories are not made here, only checked for: the result writers make
    them (the quick start writes into a ``results/`` folder a fresh clone does not have), and a
    command that then failed left them behind."""
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory: give a file name")
    if is_stream(path):  # /dev/null, a pipe: written in place at the end (a probe open of a FIFO blocks)
        return
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder != path.parent:
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"{what} {path} cannot be written: {folder} is not a writable directory",
                             path=str(path))
        return
    existed = path.exists()
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise UsageError(f"{what} {path} cannot be written: {exc.strerror}", path=str(path)) from None
    if not existed:
        path.unlink(missing_ok=True)


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
    return apply_options(func, options)


def fleet_device_options(func: Any) -> Any:
    return device_options(func, many=True)


def address_from(device: str, inventory: Path | None, ssh_key: Path | None, known_hosts: Path | None,
             agent_cmd: str | None, insecure_accept_host_key: bool,
             lg_coordinator: str | None = None) -> Any:
    from edgert.devices.address import resolve

    addr = resolve(device, inventory).replace(
        ssh_key=ssh_key, known_hosts=known_hosts, agent_cmd=agent_cmd,
        insecure_accept_host_key=insecure_accept_host_key or None)
    return addr.replace(coordinator=lg_coordinator) if addr.scheme == "labgrid" else addr


def addresses_from(devices: tuple[str, ...], all_devices: bool, inventory: Path | None,
               **how: Any) -> list[Any]:
    """Every --device (and with --all-devices every inventory device), each once, in order."""
    from edgert.devices.address import inventory_path, load_inventory

    names = list(devices)
    if all_devices:
        known = load_inventory(inventory_path(inventory))
        if not known:
            raise UsageError("--all-devices: the inventory (edgert.toml) lists no devices")
        names += known
    return [address_from(name, inventory, **how) for name in dict.fromkeys(names or ["local"])]


def apply_options(func: Any, options: list[Any]) -> Any:
    for option in reversed(options):
        func = option(func)
    return func


def measure_options(func: Any) -> Any:
    """Inputs and run-length options shared by every command that times a model."""
    return apply_options(func, [
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


def measure_args(inputs: tuple[str, ...], shapes: tuple[str, ...], warmup: int, runs: int | None,
                  min_time: float, max_time: float, threads: int | None, seed: int,
                  target: str) -> dict[str, Any]:
    """``measure_options`` values -> settings, dims, input files and target, validated once."""
    from edgert.settings import BenchSettings

    return {
        "settings": BenchSettings(warmup_runs=warmup, runs=runs, min_duration_ms=min_time * 1000,
                                  max_duration_ms=max_time * 1000, threads=threads, seed=seed),
        "dims": parse_dims(shapes),
        "input_files": {k: Path(v) for k, v in parse_pairs(inputs, "--input").items()},
        "target": target,
    }

def parse_floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated numbers, got {text!r}") from None


def echo_point(data: dict[str, Any]) -> None:
    """Progress of a sweep or calibration: one line per clock setting as it starts."""
    if "setting" in data:
        s = data["setting"]
        click.echo(f"[{data['point'] + 1}/{data['points']}] {s['domain']} = {s['requested']} "
                   f"{s['unit']}", err=True)


def write_json_output(data: Any, path: str | Path) -> None:
    """``--json PATH|-``: ``-`` prints to stdout (and nothing else goes there), else an atomic file."""
    import json

    if str(path) == "-":
        click.echo(json.dumps(data, indent=1))
        return
    from edgert.result import write_json

    write_json(data, Path(path))
