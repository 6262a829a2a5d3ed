"""Shell commands in a guest over its serial console, framed so that noise cannot confuse them.

QEMU gives the guest's ``ttyS0`` a Unix socket (the bench connects to it, as often as it
likes, one client at a time) and a log file of everything the guest wrote, connected or
not (:func:`console_arguments`). In the guest a small shell (:func:`console_shell_script`)
reads one request a line, ``<nonce> <base64 of the command>`` (no quoting, no control
characters, no length limit), and answers::

    @npabench-begin:<nonce>
    <output of the command, stderr included>
    @npabench-end:<nonce> <exit status>

:class:`GuestConsole` sends a request and takes only what is between the two markers of
its own nonce: kernel lines, the ready line, or the late answer to an earlier command
that timed out are skipped. It works over anything with ``sendall``, ``recv`` and
``settimeout``: a Unix socket here, a paramiko ``Channel`` on a remote host.
"""

from __future__ import annotations

import base64
import contextlib
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench.errors import HostError, LabError

BEGIN_MARKER = b"@npabench-begin:"
END_MARKER = b"@npabench-end:"
#: The chardev id of the console in QEMU's command line.
CHARDEV_ID = "con0"
#: ^C: interrupts the guest's running command (the console's tty keeps ISIG).
_INTERRUPT = b"\x03"
#: ``sockaddr_un`` holds 108 bytes with the terminating NUL.
_MAX_SOCKET_PATH = 107


def console_shell_script(ready_line: str) -> str:
    """The guest's half of the protocol: a ``sh`` script run on ``ttyS0`` by init.

    No echo and no canonical line editing (no line length limit), no CR added to the
    output; ISIG stays on, so ^C interrupts the running command (and the loop goes on).
    A command runs in a subshell with stdin from ``/dev/null``: it cannot eat requests,
    and its ``exit`` or ``cd`` ends with it. ``ready_line`` is printed once the loop reads.
    """
    begin, end = BEGIN_MARKER.decode(), END_MARKER.decode()
    return f"""\
#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
cd /
stty -echo -icanon -onlcr min 1 time 0
trap : INT
echo "{ready_line}"
while read -r nonce code; do
  [ -n "$code" ] || continue
  printf '\\n{begin}%s\\n' "$nonce"
  command=$(echo "$code" | base64 -d)
  ( eval "$command" ) < /dev/null 2>&1
  printf '\\n{end}%s %d\\n' "$nonce" "$?"
done
"""


class ConsoleStream(Protocol):
    """What the console needs of its byte stream (``socket.socket``, paramiko ``Channel``)."""

    def sendall(self, data: bytes, /) -> object: ...

    def recv(self, size: int, /) -> bytes: ...

    def settimeout(self, timeout: float | None, /) -> object: ...


@dataclass(frozen=True)
class ConsoleResult:
    """What one command did in the guest."""

    exit_status: int
    output: str


class ConsoleError(HostError):
    """A guest command timed out, failed (``check=True``), or the console went away."""


def console_socket(work_dir: Path, name: str) -> Path:
    """The console's Unix socket for guest ``name``."""
    return work_dir / f"{name}.console.sock"


def console_log(work_dir: Path, name: str) -> Path:
    """The log of everything guest ``name`` wrote on its console."""
    return work_dir / f"{name}.console.log"


def _option_value(path: Path) -> str:
    """``path`` as a value in a QEMU option list (a comma is written twice)."""
    return str(path).replace(",", ",,")


def serial_port_arguments(chardev_id: str, sock: Path, log: Path, name: str) -> list[str]:
    """QEMU options adding a serial port (the next ``ttyS``: the order numbers them) that
    is a Unix socket server at ``sock`` and logs all it is sent to ``log``."""
    if len(str(sock).encode()) > _MAX_SOCKET_PATH:
        raise LabError(f"{name}: serial socket path too long for a Unix socket: {sock}")
    chardev = (
        f"socket,id={chardev_id},path={_option_value(sock)},server=on,wait=off,"
        f"logfile={_option_value(log)}"
    )
    return ["-chardev", chardev, "-serial", f"chardev:{chardev_id}"]


def console_arguments(work_dir: Path, name: str) -> list[str]:
    """QEMU options making ``ttyS0`` a Unix socket server with a log file in ``work_dir``."""
    return serial_port_arguments(
        CHARDEV_ID, console_socket(work_dir, name), console_log(work_dir, name), name
    )


def wait_for_line(
    log: Path, line: str, deadline: float, alive: Callable[[], bool], name: str
) -> None:
    """Wait until console log ``log`` holds ``line`` (LabError if QEMU exits or time runs out)."""
    seen = b""
    wanted = line.encode()
    offset = 0
    while True:
        with contextlib.suppress(OSError), log.open("rb") as handle:
            handle.seek(offset)
            fresh = handle.read()
            offset += len(fresh)
            seen = seen[-len(wanted) :] + fresh
            if wanted in seen:
                return
        if not alive():
            raise LabError(f"{name}: QEMU exited while booting; see the console log {log}")
        if time.monotonic() > deadline:
            raise LabError(f"{name}: no {line!r} on the console in time; see {log}")
        time.sleep(0.05)


class GuestConsole:
    """Runs commands in guest ``name`` over ``stream``, one at a time."""

    def __init__(self, stream: ConsoleStream, name: str) -> None:
        self.stream = stream
        self.name = name
        self._buffer = b""

    @classmethod
    def connect(cls, path: Path, name: str, timeout: float = 5.0) -> GuestConsole:
        """A console over the local Unix socket ``path`` (QEMU must be running)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError as err:
            sock.close()
            raise ConsoleError(name, f"console socket {path} does not answer: {err}") from None
        return cls(sock, name)

    def run(self, command: str, timeout: float = 10.0, check: bool = False) -> ConsoleResult:
        """Run ``command`` with ``sh`` in the guest; its exit status and output.

        Raises :class:`ConsoleError` when no answer comes within ``timeout`` seconds (the
        command is then interrupted with ^C) or, with ``check``, on a non-zero status."""
        nonce = secrets.token_hex(8).encode()
        begin, end = BEGIN_MARKER + nonce, END_MARKER + nonce
        deadline = time.monotonic() + timeout
        try:
            # a newline first: whatever sits in the guest's line (a ^C the tty did not take,
            # the rest of an aborted request) becomes a line of its own, which is skipped
            self.stream.sendall(b"\n" + nonce + b" " + base64.b64encode(command.encode()) + b"\n")
        except OSError as err:
            raise ConsoleError(self.name, f"`{command}`: console write failed: {err}") from None
        match = self._answer(command, begin, end, deadline, timeout)
        self._buffer = self._buffer[match.end() :]
        output = match.group(1).decode(errors="replace").replace("\r\n", "\n")
        result = ConsoleResult(int(match.group(2)), output)
        if check and result.exit_status != 0:
            raise ConsoleError(
                self.name,
                f"`{command}` failed (exit {result.exit_status}): {output.strip()[-500:]}",
            )
        return result

    def _answer(
        self, command: str, begin: bytes, end: bytes, deadline: float, timeout: float
    ) -> re.Match[bytes]:
        """The answer framed by ``begin`` and ``end``; what comes before it is dropped."""
        answer = re.compile(
            re.escape(begin) + rb"\r?\n(.*?)\r?\n" + re.escape(end) + rb" (\d+)\r?\n", re.DOTALL
        )
        while True:
            start = self._buffer.find(begin)
            if start < 0:  # only a marker's head at the very end can still matter
                self._buffer = self._buffer[-len(begin) :]
            else:
                self._buffer = self._buffer[start:]
                match = answer.match(self._buffer) if end in self._buffer else None
                if match is not None:
                    return match
            self._receive(command, deadline, timeout)

    def _receive(self, command: str, deadline: float, timeout: float) -> None:
        remaining = deadline - time.monotonic()
        chunk: bytes | None = None
        if remaining > 0:
            try:
                self.stream.settimeout(remaining)
                chunk = self.stream.recv(65536)
            except TimeoutError:
                pass
            except OSError as err:
                raise ConsoleError(self.name, f"`{command}`: console read failed: {err}") from None
        if chunk is None:  # no answer in time: interrupt the command, the shell goes on
            with contextlib.suppress(OSError):
                self.stream.sendall(_INTERRUPT)
            raise ConsoleError(
                self.name, f"`{command}`: no answer on the serial console in {timeout:g} s"
            )
        if not chunk:
            raise ConsoleError(self.name, f"`{command}`: the console connection closed")
        self._buffer += chunk

    def close(self) -> None:
        """Close the stream (if it can be closed)."""
        close = getattr(self.stream, "close", None)
        if callable(close):
            close()
