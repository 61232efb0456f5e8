"""SSH connections with host-key verification (paramiko, honouring ~/.ssh/config).

An unknown host key is refused with its fingerprint and how to trust it; only
``--insecure-accept-host-key`` accepts it, and says so on stderr.
"""
from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path
from typing import Any

from edgert.devices.address import DeviceAddress
from edgert.errors import DeviceError, UsageError

CONNECT_TIMEOUT_S = 15.0


def fingerprint(key: Any) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a paramiko key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _policies(host: str, port: int) -> tuple[type, type]:
    import paramiko

    scan = f"ssh-keyscan{'' if port == 22 else f' -p {port}'} {host}"

    class RefuseUnknown(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            raise DeviceError(
                f"unknown SSH host key for {hostname}: {key.get_name()} {fingerprint(key)}. "
                f"If that is the device's key, add it to known_hosts ({scan} "
                ">> ~/.ssh/known_hosts, or --known-hosts FILE); "
                "--insecure-accept-host-key skips this check",
                host=hostname, fingerprint=fingerprint(key),
            )

    class InsecureAccept(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            sys.stderr.write(f"edgert: warning: accepting unverified SSH host key for {hostname}: "
                             f"{key.get_name()} {fingerprint(key)}\n")

    return RefuseUnknown, InsecureAccept


def _check_key(path: Path, paramiko: Any) -> None:
    """Refuse an --ssh-key that is no private key before connecting (paramiko would fail deep
    inside authentication with a UnicodeDecodeError)."""
    try:
        paramiko.PKey.from_path(str(path))
    except paramiko.PasswordRequiredException:
        return  # encrypted: paramiko asks the agent or fails with its own clear message
    except OSError as exc:
        raise UsageError(f"cannot read the SSH key {path}: {exc.strerror}", path=str(path)) from exc
    except Exception as exc:  # ValueError, SSHException, UnicodeDecodeError from the key parsers
        raise UsageError(f"the SSH key {path} is not a private key paramiko can read ({type(exc).__name__})",
                         path=str(path)) from exc


def connect(addr: DeviceAddress, ssh_config: Path | None = None) -> Any:
    """An authenticated ``paramiko.SSHClient`` for ``addr`` (a ``ssh://`` address)."""
    try:
        import paramiko
    except ImportError as exc:
        raise DeviceError("SSH devices need paramiko: pip install 'edgert[ssh]'") from exc
    config_path = ssh_config or Path.home() / ".ssh" / "config"
    host_cfg: dict[str, Any] = {}
    if config_path.is_file():
        host_cfg = paramiko.SSHConfig.from_path(str(config_path)).lookup(addr.host)
    hostname = host_cfg.get("hostname", addr.host)
    port = addr.port or int(host_cfg.get("port", 22))
    user = addr.user or host_cfg.get("user")
    key_files = [str(addr.ssh_key)] if addr.ssh_key else list(host_cfg.get("identityfile", []))
    if addr.ssh_key:
        _check_key(Path(addr.ssh_key), paramiko)

    client = paramiko.SSHClient()
    refuse, accept = _policies(hostname, port)
    if addr.known_hosts is not None:
        if addr.known_hosts.is_file():
            client.load_host_keys(str(addr.known_hosts))
    else:
        client.load_system_host_keys()
        for extra in host_cfg.get("userknownhostsfile", "").split():
            if Path(extra).expanduser().is_file():
                client.load_host_keys(str(Path(extra).expanduser()))
    client.set_missing_host_key_policy(accept() if addr.insecure_accept_host_key else refuse())
    try:
        client.connect(hostname, port=port, username=user, key_filename=key_files or None,
                       timeout=CONNECT_TIMEOUT_S, banner_timeout=CONNECT_TIMEOUT_S,
                       auth_timeout=CONNECT_TIMEOUT_S, look_for_keys=not key_files,
                       allow_agent=not key_files)
    except DeviceError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise DeviceError(
            f"the SSH host key of {hostname}:{port} does NOT match known_hosts "
            f"(got {fingerprint(exc.key)}): refusing to connect", host=hostname) from exc
    except (paramiko.SSHException, OSError) as exc:
        client.close()
        raise DeviceError(f"cannot connect to {user + '@' if user else ''}{hostname}:{port}: {exc}",
                          host=hostname) from exc
    return client
