"""VF operations the vmxnet3 device asks of the NIC without waiting for them.

A switch's VF operations (ACQUIRE, GET_INFO, INIT, ACTIVATE, SAVE_STATE,
RELEASE) go out on a connection of their own to the NIC's control socket; the
device's process loop reads the replies and hands each to the waiting switch
sequence (``DeviceModel.nic_step``). Meanwhile the process keeps forwarding the
emulation path, which a blocking call stopped for the length of the round trip.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
from collections.abc import Callable
from typing import Any

from nic_emulators.control import ControlError, read_lines

#: Told each reply: (the step's seq, the NIC's reply message).
OnReply = Callable[[int, dict[str, Any]], None]


class NicRequests:
    def __init__(self, path: str, selector: selectors.BaseSelector, on_reply: OnReply) -> None:
        self.path = path
        self.selector = selector
        self.on_reply = on_reply
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(path)
        except OSError as err:
            self.sock.close()
            raise ControlError(f"cannot reach {path}: {err.strerror or err}", "ENOENT") from err
        self.sock.setblocking(False)
        selector.register(self.sock, selectors.EVENT_READ, self._readable)
        self.inbuf = b""
        self.next_id = 1
        #: request id -> the seq of the step waiting for it
        self.waiting: dict[int, int] = {}
        self.closed = False

    def ask(self, seq: int, op: str, args: dict[str, Any]) -> None:
        """Send ``op``; its reply goes to ``on_reply(seq, reply)`` (an error reply at once
        if the NIC cannot be reached)."""
        if self.closed:
            self.on_reply(seq, self._lost(op))
            return
        request_id = self.next_id
        self.next_id += 1
        data = (json.dumps({"id": request_id, "op": op, **args}) + "\n").encode()
        self.waiting[request_id] = seq
        try:
            self.sock.setblocking(True)
            self.sock.sendall(data)
        except OSError as err:
            del self.waiting[request_id]
            self.on_reply(seq, self._lost(op, err))
        finally:
            with contextlib.suppress(OSError):
                self.sock.setblocking(False)

    def _lost(self, op: str, err: OSError | None = None) -> dict[str, Any]:
        why = f": {err}" if err else ""
        return {"ok": False, "error": f"{op}: the NIC at {self.path} is gone{why}", "code": "EPIPE"}

    def _readable(self) -> None:
        got = read_lines(self.sock, self.inbuf)
        if got is None:
            self.close()
            for request_id, seq in list(self.waiting.items()):
                del self.waiting[request_id]
                self.on_reply(seq, self._lost("a VF operation"))
            return
        lines, self.inbuf = got
        for line in lines:
            reply = json.loads(line)
            request_id = int(reply.get("id", 0))
            if request_id in self.waiting:  # not an event, not an answer to nothing
                self.on_reply(self.waiting.pop(request_id), reply)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.sock)
        self.sock.close()
