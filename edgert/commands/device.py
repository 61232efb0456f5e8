"""`edgert push`, `edgert device info` and `edgert agent`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgert.commands.options import address_from, device_options, output_option, write_json_output


@click.command()
@click.argument("model")
@click.option("--quiet", is_flag=True, help="No progress output.")
@device_options
def push(model: str, quiet: bool, **device: Any) -> None:
    """Upload MODEL (or a bundle) to a device's store; resumes an interrupted upload.

    Bundles, All-in-One files and ONNX models are checked first: a damaged file is refused."""
    from edgert.artifacts import check_before_upload
    from edgert.devices.connect import open_client
    from edgert.progress import Progress, step
    from edgert.zoo import resolve as resolve_model

    path = resolve_model(model)
    check_before_upload(path)
    with Progress(quiet=quiet):
        with step(f"connecting to {device['device']}"):
            client = open_client(address_from(**device))
        with client:
            sha = client.upload(path)
            link = client.link_summary()
    if link:
        click.echo(f"serial link: {link}", err=True)
    click.echo(f"{path} is on {device['device']} as {sha}")


@click.group(name="device")
def device_group() -> None:
    """Inspect devices."""


@device_group.command(name="info")
@click.option("--sysfs-root", default=None,
              help="Read sysfs under this directory (fixtures, tests); a remote agent must run with "
                   "the same --sysfs-root.")
@output_option("--json", "json_path", default=None, metavar="PATH|-",
              help="Also write the facts as JSON (- prints only the JSON, on stdout).")
@device_options
def device_info(sysfs_root: str | None, json_path: Path | None, **device: Any) -> None:
    """Print a device's CPU, frequency domains, power rails and temperatures."""
    from edgert.devices.info import collect_info, render_info

    info = collect_info(address_from(**device), sysfs_root)
    if json_path:
        write_json_output(info, json_path)
    if str(json_path) != "-":
        render_info(info)


@click.command()
@click.option("--stdio", "mode", flag_value="stdio", help="Speak the protocol on stdin/stdout (SSH).")
@click.option("--serial", "serial_dev", default=None, help="Serve on this serial device.")
@click.option("--baud", default=115200, show_default=True, help="Serial line rate.")
@click.option("--listen", default=None, metavar="HOST:PORT", help="Serve on TCP (needs --token-file).")
@click.option("--token-file", type=click.Path(path_type=Path), default=None,
              help="Shared secret for --listen.")
@click.option("--store", "store_dir", type=click.Path(path_type=Path), default=None,
              help="Artifact store directory [default: ~/.local/share/edgert/store].")
@click.option("--store-quota-mb", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Evict old artifacts above this.")
@click.option("--sysfs-root", default="/", show_default=True,
              help="sysfs root (fixtures, tests); hosts may not choose another.")
@click.option("--emulated", is_flag=True, help="This board is an emulator: label every number.")
@click.option("--allow-meter", "allowed_meters", multiple=True, metavar="URL",
              help="A power meter URL hosts may ask sweeps to read (repeat; default: none).")
@click.option("--idle-timeout", type=click.FloatRange(min=0.1), default=600.0, show_default=True,
              help="End a serial or TCP session after this many seconds without a request.")
def agent(mode: str | None, serial_dev: str | None, baud: int, listen: str | None,
          token_file: Path | None, store_dir: Path | None, store_quota_mb: int, sysfs_root: str,
          emulated: bool, allowed_meters: tuple[str, ...], idle_timeout: float) -> None:
    """Run the device agent (on the board)."""
    from edgert.device_agents import serve

    serve.run(stdio=mode == "stdio", serial=serial_dev, baud=baud, listen=listen, token_file=token_file,
              idle_timeout=idle_timeout, store_dir=store_dir, quota_bytes=store_quota_mb << 20,
              sysfs_root=sysfs_root, emulated=emulated, allowed_meters=allowed_meters)
