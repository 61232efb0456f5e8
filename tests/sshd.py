"""A real OpenSSH server on 127.0.0.1 with generated keys, for device tests."""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

from ports import ServerExited, free_port, listening_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def sshd_available() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None


@dataclasses.dataclass
class Sshd:
    port: int
    user: str
    client_key: Path
    known_hosts: Path  # holds the server's real host key
    host_pub: Path
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_sshd(workdir: Path, attempts: int = 5) -> Sshd:
    """Start sshd in the foreground (-D) on a free loopback port; returns once it listens.

    sshd refuses ``Port 0``, so the port is picked first; when another process takes it
    before sshd binds, sshd exits and the next attempt picks another port.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    host_key, client_key = workdir / "host_ed25519", workdir / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = workdir / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True,
                                                     text=True).stdout.strip()
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation directory sshd insists on
    log = workdir / "sshd.log"
    for _ in range(attempts):
        port = free_port()
        config = workdir / "sshd_config"
        config.write_text("\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
            f"AuthorizedKeysFile {authorized}", f"PidFile {workdir / 'sshd.pid'}",
            "StrictModes no", "UsePAM no", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes", "LogLevel ERROR", "PermitUserEnvironment no",
            "AcceptEnv *", "Subsystem sftp internal-sftp",
        ]) + "\n")
        with open(log, "wb") as err:
            proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                    stdout=subprocess.DEVNULL, stderr=err)
        try:
            listening_port(proc, port, timeout=30)  # sshd's own listener, not a stranger's
            break
        except ServerExited:
            if "Address already in use" not in log.read_text():
                raise RuntimeError(f"sshd exited: {log.read_text()}") from None
        except TimeoutError:
            proc.kill()
            raise
    else:
        raise RuntimeError(f"sshd found no free port in {attempts} attempts: {log.read_text()}")
    known_hosts = workdir / "known_hosts"
    host_pub = host_key.with_suffix(".pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    return Sshd(port, user, client_key, known_hosts, host_key.with_suffix(".pub"), proc, log)
