"""A real OpenSSH sshd per emulated host, with keys the bench generates and pins.

Every lab gets one client key; every host gets its own ed25519 host key. The
bench writes the known_hosts file from those host keys itself (no "trust on
first use"), so a host that later presents another key is refused.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from bench.errors import LabError
from bench.lab.system import run_local

SSHD = "/usr/sbin/sshd"
#: Privilege-separation directory OpenSSH's sshd insists on.
PRIVSEP_DIR = Path("/run/sshd")


def generate_key(path: Path, comment: str) -> str:
    """Create an ed25519 key pair at ``path`` (and ``path``.pub); return the public key line."""
    run_local(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_suffix(".pub").read_text().strip()


def write_sshd_config(directory: Path, address: str, port: int, authorized_keys: Path) -> Path:
    """The sshd_config of one emulated host; returns its path."""
    config = directory / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"ListenAddress {address}:{port}",
                f"HostKey {directory / 'ssh_host_ed25519_key'}",
                f"AuthorizedKeysFile {authorized_keys}",
                "PidFile none",
                "UsePAM no",
                "StrictModes no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UseDNS no",
                "PrintMotd no",
                "PrintLastLog no",
                # The bench opens many channels at once (streams, fan-out).
                "MaxSessions 128",
                "MaxStartups 128:30:256",
                "ClientAliveInterval 15",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    return config


def sshd_argv(config: Path, log: Path) -> list[str]:
    """Command line of an sshd in the foreground, logging to ``log``."""
    return [SSHD, "-D", "-f", str(config), "-E", str(log)]


def check_sshd_config(config: Path) -> None:
    """Let sshd itself validate the configuration before it is started (``sshd -t``)."""
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    run_local([SSHD, "-t", "-f", str(config)])


def wait_for_banner(
    host: str, address: str, port: int, *, deadline: float, log: Path, alive: Callable[[], bool]
) -> None:
    """Wait until sshd at ``address:port`` answers with its SSH banner, or raise LabError.

    Gives up at once if the sshd process (``alive``) has exited.
    """
    last_error = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            last_error = "sshd exited"
            break
        try:
            with socket.create_connection((address, port), timeout=0.5) as conn:
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                if conn.recv(64).startswith(b"SSH-"):
                    return
                last_error = "no SSH banner"
        except OSError as err:
            last_error = err.strerror or str(err)
        time.sleep(0.02)
    tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
    raise LabError(
        f"sshd of host {host} did not answer on {address}:{port} ({last_error}); "
        f"sshd log {log}: {' | '.join(tail) or 'empty'}"
    )
