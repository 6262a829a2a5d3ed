"""A QMP client (QEMU Machine Protocol) over a Unix socket: enough to ask and to quit.

QMP is QEMU's own control channel (JSON lines: a greeting, ``qmp_capabilities``, then
``{"execute": ...}`` with one ``return`` or ``error`` each, events in between). The
failover backend needs it for migration and device events; the SR-IOV host uses it to
ask QEMU to quit cleanly before any signal is sent.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Protocol

from bench.errors import LabError


class Stream(Protocol):
    """A byte stream to a QMP socket: a Unix socket here, or an SSH channel relaying to it."""

    def sendall(self, data: bytes, /) -> None: ...
    def recv(self, size: int, /) -> bytes: ...
    def settimeout(self, timeout: float | None, /) -> None: ...
    def close(self) -> None: ...


class QmpError(LabError):
    """QEMU refused a command, or its QMP socket did not answer."""


class QmpClient:
    """One QMP session; events received while waiting for a reply are kept in ``events``."""

    def __init__(self, path: Path, timeout: float = 5.0, stream: Stream | None = None) -> None:
        """Connect to QMP socket ``path``, or talk over ``stream`` (already connected to it,
        e.g. an SSH channel relaying to the socket on the QEMU's host)."""
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self._sock: Stream = stream or socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            if stream is None:
                self._sock.connect(str(path))  # type: ignore[attr-defined]
            self._read()  # the greeting
            self.execute("qmp_capabilities")
        except (OSError, QmpError) as err:
            self._sock.close()
            raise QmpError(f"QMP socket {path} does not answer: {err}") from None

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise QmpError(f"QMP socket {self.path} closed")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def receive(self) -> dict[str, Any]:
        """The next message QEMU sends (an event, when no command is pending); the stream's
        timeout applies (``TimeoutError``/``socket.timeout`` when nothing came)."""
        return self._read()

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run ``command``; its ``return`` value, or QmpError with QEMU's error text."""
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self._sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            message = self._read()
            if "event" in message:
                self.events.append(message)
            elif "error" in message:
                error = message["error"]
                raise QmpError(f"QEMU refused {command}: {error.get('desc', error)}")
            elif "return" in message:
                return message["return"]

    def close(self) -> None:
        self._sock.close()


def wait_for_socket(path: Path, deadline: float, alive: Any) -> None:
    """Wait until QEMU has made its QMP socket (``alive()`` false: it exited)."""
    while not path.exists():
        if not alive():
            raise QmpError(f"QEMU exited before it made its QMP socket {path}")
        if time.monotonic() > deadline:
            raise QmpError(f"QEMU made no QMP socket {path} in time")
        time.sleep(0.02)
