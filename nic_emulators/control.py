"""The control channel of every data-path process: JSON lines over a UNIX stream socket.

A request is ``{"id": N, "op": "NAME", ...args}``; the answer is
``{"id": N, "ok": true, "result": {...}}`` or ``{"id": N, "ok": false,
"error": "text", "code": "EPERM"}``. A connection that sends
``{"op": "subscribe"}`` also receives events: ``{"event": "name", "at": t, ...}``
(``at`` is ``time.time()`` in the process that saw it).

The server side is a non-blocking part of the owning process's ``selectors``
loop; a handler may answer later (``Deferred``) when an operation takes several
steps, so the loop keeps moving frames meanwhile. The client side is blocking,
for the controller, the CLI and tests.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Reply = dict[str, Any]


class ControlError(Exception):
    """An operation was refused or failed; ``code`` is errno-like (EPERM, EBUSY, EINVAL...)."""

    def __init__(self, message: str, code: str = "EIO") -> None:
        super().__init__(message)
        self.code = code


def read_lines(sock: socket.socket, pending: bytes) -> tuple[list[bytes], bytes] | None:
    """What a non-blocking stream socket has now: its whole lines (without the newline)
    and the start of the next one, to pass back in as ``pending`` next time. None once the
    peer has closed the connection, or it broke."""
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return [], pending
    except OSError:
        return None
    if not data:
        return None
    *lines, rest = (pending + data).split(b"\n")
    return lines, rest


class Deferred:
    """Returned by a handler that will answer later through ``Connection.answer``."""


DEFERRED = Deferred()


@dataclass(eq=False)
class Connection:
    sock: socket.socket
    server: ControlServer
    inbuf: bytes = b""
    subscribed: bool = False
    closed: bool = False
    pending: dict[int, str] = field(default_factory=dict)
    #: The peer closed its end: nothing more is sent, but what it sent before closing is
    #: still read (a guest's driver answers its old device, then hangs up at once).
    peer_gone: bool = False

    def send(self, message: dict[str, Any]) -> None:
        if self.closed or self.peer_gone:
            return
        data = (json.dumps(message) + "\n").encode()
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(2.0)
            self.sock.sendall(data)
        except TimeoutError:  # a peer that reads nothing for that long is stuck: hang up
            self.server.drop(self)
        except OSError:  # EPIPE, ECONNRESET: the socket's EOF comes after its last data
            self.peer_gone = True
        finally:
            with contextlib.suppress(OSError):
                self.sock.setblocking(False)

    def answer(
        self, request_id: int, result: Reply | None = None, error: Exception | None = None
    ) -> None:
        """Answer request ``request_id`` (for deferred operations)."""
        if error is None:
            self.send({"id": request_id, "ok": True, "result": result or {}})
        else:
            code = error.code if isinstance(error, ControlError) else "EIO"
            self.send({"id": request_id, "ok": False, "error": str(error), "code": code})


Handler = Callable[[Connection, int, str, dict[str, Any]], "Reply | Deferred"]


class ControlServer:
    """Serves ``path`` inside a selectors loop; ``handler(conn, id, op, args)`` answers."""

    def __init__(self, selector: selectors.BaseSelector, path: Path, handler: Handler) -> None:
        self.selector = selector
        self.path = path
        self.handler = handler
        self.connections: list[Connection] = []
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        path.chmod(0o600)
        #: The socket file this server made: a device that took over the path (a migrated
        #: guest's destination renames its socket over the source's) keeps it on close.
        self.inode = path.stat().st_ino
        self.listener.listen(16)
        self.listener.setblocking(False)
        selector.register(self.listener, selectors.EVENT_READ, self._accept)

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            sock, _ = self.listener.accept()
            sock.setblocking(False)
            conn = Connection(sock, self)
            self.connections.append(conn)
            self.selector.register(sock, selectors.EVENT_READ, lambda: self._read(conn))

    def _read(self, conn: Connection) -> None:
        got = read_lines(conn.sock, conn.inbuf)
        if got is None:
            self.drop(conn)
            return
        lines, conn.inbuf = got
        for line in lines:
            if conn.closed:  # a request before it closed the connection
                break
            self._dispatch(conn, line)

    def _dispatch(self, conn: Connection, line: bytes) -> None:
        try:
            request = json.loads(line)
            request_id = int(request.pop("id", 0))
            op = str(request.pop("op"))
        except (ValueError, KeyError, TypeError, AttributeError):
            conn.send(
                {
                    "id": 0,
                    "ok": False,
                    "error": f"malformed request {line[:80]!r}",
                    "code": "EINVAL",
                }
            )
            return
        if op == "subscribe":
            conn.subscribed = True
            conn.answer(request_id, {})
            return
        try:
            reply = self.handler(conn, request_id, op, request)
        except ControlError as err:
            conn.answer(request_id, error=err)
            return
        except Exception as err:  # a bug must not take the device down; report it
            conn.answer(request_id, error=ControlError(f"{op}: {type(err).__name__}: {err}", "EIO"))
            return
        if not isinstance(reply, Deferred):
            conn.answer(request_id, reply)

    def drop(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        conn.sock.close()
        with contextlib.suppress(ValueError):
            self.connections.remove(conn)

    def publish(self, event: str, **details: Any) -> None:
        """Send an event to every subscribed connection."""
        message = {"event": event, "at": time.time(), **details}
        for conn in list(self.connections):
            if conn.subscribed:
                conn.send(message)

    def close(self) -> None:
        for conn in list(self.connections):
            self.drop(conn)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.listener)
        self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_ino == self.inode:
                self.path.unlink()

    def move_to(self, path: Path) -> None:
        """Serve at ``path`` from now on (atomically replacing what was there)."""
        self.path.replace(path)
        self.path = path


class ControlClient:
    """Blocking client: ``call(op, **args)`` returns the result or raises ControlError."""

    def __init__(self, path: Path | str, timeout: float = 10.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
        except OSError as err:
            self.sock.close()
            raise ControlError(
                f"cannot reach {self.path}: {err.strerror or err}", "ENOENT"
            ) from err
        self.inbuf = b""
        self.next_id = 1
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _line(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self.inbuf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise
            except OSError as err:
                raise ControlError(f"{self.path}: {err}", "EPIPE") from err
            if not data:
                raise ControlError(f"{self.path}: connection closed by the device", "EPIPE")
            self.inbuf += data
        line, self.inbuf = self.inbuf.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def call(self, op: str, /, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        request_id = self.next_id
        self.next_id += 1
        self.sock.sendall((json.dumps({"id": request_id, "op": op, **args}) + "\n").encode())
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                message = self._line(deadline)
            except TimeoutError:
                raise ControlError(
                    f"{op}: no answer from {self.path} within {timeout or self.timeout:.1f} s",
                    "ETIMEDOUT",
                ) from None
            if "event" in message:
                self.events.append(message)
                continue
            if message.get("id") != request_id:
                continue
            if message.get("ok"):
                result: dict[str, Any] = message.get("result", {})
                return result
            raise ControlError(str(message.get("error")), str(message.get("code", "EIO")))

    def subscribe(self) -> None:
        self.call("subscribe")

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        """The next event (None when none arrives within ``timeout``)."""
        if self.events:
            return self.events.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self._line(deadline)
            except TimeoutError:
                return None
            if "event" in message:
                return message

    def wait_event(self, name: str, timeout: float, **match: Any) -> dict[str, Any]:
        """Wait for event ``name`` (with fields equal to ``match``); ControlError on timeout."""
        deadline = time.monotonic() + timeout
        kept: list[dict[str, Any]] = []
        try:
            while True:
                event = self.next_event(max(0.0, deadline - time.monotonic()))
                if event is None:
                    raise ControlError(
                        f"no {name!r} event from {self.path} within {timeout:.1f} s", "ETIMEDOUT"
                    )
                if event["event"] == name and all(event.get(k) == v for k, v in match.items()):
                    return event
                kept.append(event)
        finally:
            self.events[:0] = kept


def events_of(client: ControlClient) -> Iterator[dict[str, Any]]:
    while True:
        event = client.next_event(3600)
        if event is not None:
            yield event
