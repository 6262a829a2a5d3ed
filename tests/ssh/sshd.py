"""A real OpenSSH server on 127.0.0.1 for the tests, and process helpers.

The server runs in the foreground (``-D``) with a temporary host key, a
temporary client key and its own config; nothing under ~/.ssh or /etc/ssh is
read or written. It is stopped by PID together with every session process it
forked, so a failing test cannot leave shells or sleeps behind.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.ssh import SshEndpoint

SSHD = "/usr/sbin/sshd"
START_TIMEOUT = 10.0


def keygen(path: Path, kind: str = "ed25519") -> str:
    """Create a key pair at ``path``; return the public key line (type and base64)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(path)], check=True
    )
    return path.with_suffix(".pub").read_text().strip()


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; the fields after ")" do not.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` in the process tree."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _ppid_and_state(int(entry.name))) is not None:
            parents.setdefault(info[0], []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead)."""
    info = _ppid_and_state(pid)
    return info is not None and info[1] not in ("Z", "X")


def wait_dead(pids: list[int], timeout: float = 5.0) -> list[int]:
    """Wait until none of ``pids`` lives; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if pid_alive(pid)]
    while alive and time.monotonic() < deadline:
        # Nothing signals a foreign process's death to us: poll /proc, with
        # select() on no descriptors as the short pause between looks.
        select.select([], [], [], 0.01)
        alive = [pid for pid in alive if pid_alive(pid)]
    return alive


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Sshd:
    """The running test server and the files a client needs for it."""

    port: int
    pid: int
    dir: Path
    #: The server's public host key line, as pinned in ``known_hosts``.
    host_key: str
    client_key: Path
    known_hosts: Path
    log: Path

    def endpoint(self, name: str = "h0", **changes: object) -> SshEndpoint:
        """An endpoint for this server, with fields overridden by ``changes``."""
        fields: dict[str, object] = {
            "host": name,
            "address": "127.0.0.1",
            "port": self.port,
            "user": "root",
            "key_file": self.client_key,
            "known_hosts": self.known_hosts,
        }
        fields.update(changes)
        return SshEndpoint(**fields)  # type: ignore[arg-type]

    def logins(self) -> int:
        """How many public-key logins the server has accepted so far."""
        return self.log.read_text().count("Accepted publickey")


def _config(tmp: Path, port: int) -> Path:
    config = tmp / "sshd_config"
    config.write_text(
        f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {tmp}/host_key
AuthorizedKeysFile {tmp}/authorized_keys
PidFile none
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
LogLevel INFO
"""
    )
    return config


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Poll until sshd greets on ``port`` (True), or exits or times out (False)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                if sock.recv(8).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        try:
            proc.wait(timeout=0.02)  # The pause between attempts; notices an exit.
        except subprocess.TimeoutExpired:
            continue
        return False
    proc.kill()
    proc.wait()
    return False


def start_sshd(tmp: Path) -> tuple[subprocess.Popen[bytes], Sshd]:
    """Generate keys and start sshd on a free port under ``tmp``."""
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # Privilege-separation dir.
    host_key = keygen(tmp / "host_key")
    (tmp / "authorized_keys").write_text(keygen(tmp / "client_key") + "\n")
    log = tmp / "sshd.log"
    for _ in range(3):  # Another process may take the free port before sshd does.
        port = _free_port()
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(_config(tmp, port))],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if _wait_listening(proc, port):
            known_hosts = tmp / "known_hosts"
            known_hosts.write_text(f"[127.0.0.1]:{port} {host_key}\n")
            return proc, Sshd(
                port=port,
                pid=proc.pid,
                dir=tmp,
                host_key=host_key,
                client_key=tmp / "client_key",
                known_hosts=known_hosts,
                log=log,
            )
    raise RuntimeError(f"sshd did not start; its log:\n{log.read_text()}")


def stop_sshd(proc: subprocess.Popen[bytes]) -> list[int]:
    """Kill sshd and every process it forked; return any that would not die."""
    leftovers = descendants(proc.pid)
    for pid in [proc.pid, *leftovers]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return wait_dead(leftovers, 5.0)
