"""Device addresses (``--device``): URLs, or names looked up in an ``edgert.toml`` inventory.

    local                               this machine, no agent process
    ssh://user@host[:port]              the agent started over SSH (``edgert agent --stdio``)
    serial:///dev/ttyUSB0?baud=115200   the agent listening on a serial line
    tcp://host:port                     the agent listening on TCP with a shared token
    labgrid://PLACE                     a labgrid place (or labgrid://?TAG=VALUE), see devices/labgrid.py
    pi5                                 a name from the inventory
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

from edgert.device_agents.transports import MAX_BAUD
from edgert.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SCHEMES = ("local", "ssh", "serial", "tcp", "labgrid")
DEFAULT_AGENT_CMD = "edgert agent --stdio"
DEFAULT_BAUD = 115200


@dataclasses.dataclass(frozen=True)
class DeviceAddress:
    """Where a device is and how to reach it; built once from the URL and inventory defaults."""

    scheme: str
    name: str  # inventory name, or the URL itself
    host: str = ""
    port: int | None = None
    user: str | None = None
    path: str = ""  # serial device node
    baud: int = DEFAULT_BAUD
    agent_cmd: str = DEFAULT_AGENT_CMD
    ssh_key: Path | None = None
    known_hosts: Path | None = None
    token_file: Path | None = None
    insecure_accept_host_key: bool = False
    emulated: bool = False  # the board is an emulator: every number it gives is labelled

    def replace(self, **changes: Any) -> "DeviceAddress":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclasses.dataclass(frozen=True)
class LabgridAddress(DeviceAddress):
    """A ``labgrid://`` device: a place name or a tag selector, plus how to reach the board."""

    place: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    coordinator: str | None = None


def parse_labgrid_url(url: str, name: str | None = None) -> LabgridAddress:
    """``labgrid://PLACE`` or ``labgrid://?KEY=VALUE&...``; raises ``UsageError`` saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "labgrid":
        raise UsageError(f"not a labgrid URL: {url!r}")
    place = parts.netloc
    tags = tuple(parse_qsl(parts.query, keep_blank_values=True))
    if parts.path or parts.fragment or bool(place) == bool(tags) or any(not v for _, v in tags):
        raise UsageError(f"bad labgrid device {url!r}: use labgrid://PLACE, or "
                         "labgrid://?KEY=VALUE[&KEY=VALUE] to match places by tag")
    return LabgridAddress("labgrid", name or url, place=place, tags=tags)


def parse_url(url: str, name: str | None = None) -> DeviceAddress:
    """Parse a device URL; raises ``UsageError`` saying which part is wrong."""
    if url == "local":
        return DeviceAddress("local", name or "local")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise UsageError(f"bad device URL {url!r}: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise UsageError(f"unknown device {url!r}: use local, ssh://user@host[:port], "
                         "serial:///dev/ttyX?baud=N, tcp://host:port, labgrid://PLACE "
                         "or a name from edgert.toml")
    if parts.scheme == "labgrid":
        return parse_labgrid_url(url, name)
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"bad port in device URL {url!r}") from None
    if port == 0:
        raise UsageError(f"device URL {url!r}: port 0 is not a port to connect to (1-65535)")
    query = parse_qs(parts.query, keep_blank_values=True)
    if parts.scheme == "serial":
        unknown = sorted(set(query) - {"baud"})
        if unknown:
            raise UsageError(f"serial URL {url!r}: unknown option {unknown[0]!r} (the only one is baud=N)")
        if not parts.path:
            raise UsageError(f"serial URL {url!r} needs a device path, e.g. serial:///dev/ttyUSB0")
        try:
            baud = int(query.get("baud", [DEFAULT_BAUD])[0])
        except ValueError:
            raise UsageError(f"bad baud rate in {url!r}") from None
        if not 0 < baud <= MAX_BAUD:
            raise UsageError(f"baud rate {baud} in {url!r} is not a serial line rate (1-{MAX_BAUD})")
        return DeviceAddress("serial", name or url, path=parts.path, baud=baud)
    if not parts.hostname:
        raise UsageError(f"device URL {url!r} needs a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(f"device URL {url!r}: {parts.scheme}:// takes only [user@]host:port, "
                         f"not {url[len(parts.scheme) + 3 + len(parts.netloc):]!r}")
    if parts.scheme == "tcp" and port is None:
        raise UsageError(f"tcp device URL {url!r} needs a port")
    if parts.scheme == "tcp" and parts.username is not None:
        raise UsageError(f"tcp device URL {url!r}: tcp:// takes no user (the agent checks a token: "
                         "token_file in edgert.toml or EDGERT_TOKEN_FILE)")
    if parts.password is not None:
        raise UsageError(f"device URL {url!r}: no password in a URL (use an SSH key)")
    return DeviceAddress(parts.scheme, name or url, host=parts.hostname, port=port,
                         user=parts.username)


def inventory_path(explicit: Path | None = None) -> Path | None:
    """``--inventory``, else ``./edgert.toml``, else ``$XDG_CONFIG_HOME/edgert/edgert.toml``."""
    if explicit is not None:
        return explicit
    for candidate in (Path("edgert.toml"),
                      Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
                      / "edgert" / "edgert.toml"):
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # an unreadable HOME (another user's): no inventory there
            continue
    return None


_TEXT_FIELDS = ("url", "agent_cmd", "ssh_key", "known_hosts", "token_file", "coordinator")
_BOOL_FIELDS = ("emulated",)


def load_inventory(path: Path | None) -> dict[str, DeviceAddress]:
    """``[devices.NAME]`` tables with ``url`` and optional defaults."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read device inventory {path}: {exc}") from exc
    tables = data.get("devices") or {}
    if not isinstance(tables, dict):
        raise UsageError(f"devices in {path} must be tables ([devices.NAME]), got {_toml_type(tables)}")
    return {name: _inventory_device(name, table, path) for name, table in tables.items()}


def _inventory_device(name: str, table: Any, path: Path) -> DeviceAddress:
    """One ``[devices.NAME]`` table, its fields type-checked first: TOML gives ints, lists and
    strings alike, and a wrong type failed deep in parsing (AttributeError) or read as true."""
    where = f"device {name!r} in {path}"
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table ([devices.{name}]), got {_toml_type(table)}")
    if "url" not in table:
        raise UsageError(f"{where} has no url")
    for key, value in table.items():
        if key in _TEXT_FIELDS and not isinstance(value, str):
            raise UsageError(f"{where}: {key} must be a string, got {_toml_type(value)}")
        if key in _BOOL_FIELDS and not isinstance(value, bool):
            raise UsageError(f"{where}: {key} must be true or false (a TOML boolean), got {value!r}")
    try:
        addr = parse_url(table["url"], name)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc.message}") from None
    addr = addr.replace(
        agent_cmd=table.get("agent_cmd"),
        ssh_key=_path(table.get("ssh_key")),
        known_hosts=_path(table.get("known_hosts")),
        token_file=_path(table.get("token_file")),
        emulated=table.get("emulated"),
    )
    if table.get("coordinator"):
        if addr.scheme != "labgrid":
            raise UsageError(f"{where}: coordinator is only for labgrid:// urls")
        addr = addr.replace(coordinator=table["coordinator"])
    return addr


def _toml_type(value: Any) -> str:
    """``value``'s TOML type name with the value, for saying what was given instead."""
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             list: "an array", dict: "a table"}
    return f"{kinds.get(type(value), type(value).__name__)} ({value!r})"


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def resolve(spec: str, inventory: Path | None = None) -> DeviceAddress:
    """A ``--device`` value: an inventory name first, then a URL."""
    devices = load_inventory(inventory_path(inventory))
    if spec in devices:
        return devices[spec]
    if "://" not in spec and spec != "local":
        known = ", ".join(sorted(devices)) or "none (no edgert.toml found)"
        raise UsageError(f"unknown device {spec!r}; inventory devices: {known}")
    return parse_url(spec)
