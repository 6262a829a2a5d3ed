"""QEMU on a test host, driven over SSH: start, reach its sockets, stop.

QEMU is started by the host's own shell (so it runs in the host's network
namespace, or on the real server) with ``-daemonize``: it outlives the SSH session
that started it, and its PID comes back from its ``-pidfile``. Its QMP monitors, the
serial console and the guest kernel's serial port are Unix sockets on the host; the
controller reaches each through a relay started over SSH (a few lines of stdlib
Python on the host, copying between the channel and the socket; for the kernel's
port, the steering watcher of ``bench.qemu.steering_watch`` instead), so the same
code drives a namespace host and a lab server. QEMU is stopped by PID: QMP ``quit``
first, then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import shlex
import time

import paramiko

from bench.errors import LabError
from bench.qemu.accel import QEMU_BINARY
from bench.qemu.failover_vm import VmFiles
from bench.qemu.qmp import QmpClient, QmpError
from bench.ssh import SshHost
from drivers.linux_pf import CommandHost

#: Runs on the host: copy stdin to the Unix socket argv[1] and the socket to stdout,
#: until either side ends (the SSH channel closing ends stdin). It says on stderr when
#: it has connected.
_RELAY = """\
import os, select, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    sys.exit(f"relay: cannot connect to {sys.argv[1]}: {e}")
sys.stderr.write("relay: connected\\n")
sys.stderr.flush()
while True:
    r = select.select([0, s], [], [])[0]
    if 0 in r:
        d = os.read(0, 65536)
        if not d:
            break
        s.sendall(d)
    if s in r:
        d = s.recv(65536)
        if not d:
            break
        while d:
            d = d[os.write(1, d):]
"""

#: Seconds QEMU gets to exit after ``quit``, and again after SIGTERM.
STOP_GRACE_S = 5.0


def relay_command(socket_path: str) -> str:
    """The host command that relays a channel to ``socket_path``."""
    return f"exec python3 -u -c {shlex.quote(_RELAY)} {shlex.quote(socket_path)}"


def open_socket(
    host: SshHost,
    socket_path: str,
    timeout: float = 10.0,
    connected: bool = False,
    command: str | None = None,
) -> paramiko.Channel:
    """A byte stream to Unix socket ``socket_path`` on ``host`` (close it when done).
    ``connected``: return only once the relay has connected to the socket (for a stream
    that only speaks, where whatever comes before the connection is lost). QEMU accepts
    the connection a moment later, in its main loop: what it writes in between is lost.
    ``command``: a program of its own in place of the plain relay, which says
    ``relay: connected`` on stderr as the relay does."""
    channel = host.open_stream(command or relay_command(socket_path))
    channel.settimeout(timeout)
    if connected:
        said = b""
        try:  # the relay's own line, after whatever the host's shell may print first
            while b"relay: " not in said or not said.endswith(b"\n"):
                chunk = channel.recv_stderr(256)
                if not chunk:
                    break
                said += chunk
        except TimeoutError:
            pass
        if b"relay: connected" not in said:
            channel.close()
            raise LabError(
                f"{host.name}: cannot reach {socket_path}: "
                f"{said.decode(errors='replace').strip() or 'no answer from the relay'}"
            )
    return channel


#: The host's time in seconds with microseconds (bash 5; ``date`` where it lacks it).
_CLOCK_COMMAND = "echo ${EPOCHREALTIME:-$(date +%s.%N)}"


def host_clock_offset(host: CommandHost, samples: int = 5) -> float:
    """The host's clock minus this machine's, in seconds: the host's time (bash's
    ``EPOCHREALTIME``: no process started, so the round trip stays short) against the
    middle of the round trip that asked for it, from the quickest of ``samples`` round
    trips (its error is at most half that round trip)."""
    best: tuple[float, float] | None = None
    for _ in range(samples):
        sent = time.time()
        said = host.run(_CLOCK_COMMAND, timeout=10.0, check=True).stdout.strip()
        back = time.time()
        try:
            there = float(said.replace(",", "."))
        except ValueError:
            raise LabError(f"{host.name}: `{_CLOCK_COMMAND}` said {said!r}") from None
        if best is None or back - sent < best[0]:
            best = (back - sent, there - (sent + back) / 2)
    assert best is not None
    return best[1]


def start_qemu(host: SshHost, argv: list[str], files: VmFiles, timeout: float = 30.0) -> int:
    """Start ``qemu-system-x86_64 argv`` (which must daemonize) on ``host``; its PID.

    LabError with the host, QEMU's exit status and what it printed if it did not start."""
    command = " ".join(
        [
            f"mkdir -p {shlex.quote(str(files.directory))} &&",
            f"rm -f {shlex.quote(str(files.pidfile))} &&",
            shlex.join([QEMU_BINARY, *argv]),
            f"&& cat {shlex.quote(str(files.pidfile))}",
        ]
    )
    result = host.run(command, timeout=timeout)
    if result.exit_status != 0 or not result.stdout.strip().isdigit():
        said = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise LabError(
            f"{host.name}: QEMU for {files.name} did not start (exit status "
            f"{result.exit_status}): {' | '.join(said) or 'no output'}"
        )
    return int(result.stdout.strip())


def is_running(host: SshHost, pid: int, files: VmFiles) -> bool:
    """Whether ``pid`` on ``host`` is still this QEMU (its command line names its files)."""
    needle = shlex.quote(str(files.pidfile))
    result = host.run(f"tr '\\0' ' ' </proc/{pid}/cmdline 2>/dev/null | grep -qF -- {needle}")
    return result.exit_status == 0


def stop_qemu(host: SshHost, pid: int, files: VmFiles) -> None:
    """Stop QEMU ``pid`` on ``host``: QMP ``quit``, then SIGTERM, then SIGKILL."""
    if not is_running(host, pid, files):
        return
    try:
        channel = open_socket(host, str(files.qmp_commands), timeout=3.0)
        client = QmpClient(files.qmp_commands, timeout=3.0, stream=channel)
        try:
            client.execute("quit")
        finally:
            client.close()
    except (QmpError, OSError, LabError):
        pass
    for signal in ("TERM", "KILL"):
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            if not is_running(host, pid, files):
                return
            time.sleep(0.05)
        host.run(f"kill -{signal} {pid} 2>/dev/null; true")
    if is_running(host, pid, files):
        raise LabError(f"{host.name}: QEMU {pid} of {files.name} survived SIGKILL")
