"""The FPGA NIC's CSR endpoint: a non-blocking TCP server inside a ``selectors`` loop.

The owning process runs one single-threaded loop::

    for key, _ in selector.select(timeout):
        key.data()

so every socket this server registers carries, as ``data``, a zero-argument
callable. A connection's callable does all of its work whichever event woke it:

* it flushes pending output with non-blocking ``send`` (whatever the kernel
  takes now; the rest stays in the connection's output buffer),
* answers every complete 12-byte request already buffered, in order
  (``protocol``: requests may be pipelined; partial frames stay buffered
  until the rest arrives),
* reads once with non-blocking ``recv`` and answers what arrived.

Nothing ever blocks the loop. The registration follows the buffers: a
connection waits for EVENT_WRITE while it has output pending, and stops
waiting for EVENT_READ while that output exceeds ``OUTPUT_HIGH_WATER``, so a
client that pipelines requests without reading answers is held back by TCP
flow control instead of growing the emulator's memory. Since one callable
serves both events, it never needs to know which event fired.

A client that half-closes (EOF) still gets the answers to what it sent; the
connection is closed when they are out. ``close()`` closes the listener and
every connection (a powered-off board's endpoint goes away: connection
refused); power-on creates a new ``CsrServer`` (``SO_REUSEADDR`` lets it bind
the same port again).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
from dataclasses import dataclass, field

from nic_emulators.csr.protocol import (
    FRAME_SIZE,
    ProtocolError,
    Status,
    decode_request,
    encode_response,
)
from nic_emulators.csr.regmap import CsrFault, RegisterMap

log = logging.getLogger(__name__)

#: Stop reading a connection while more than this many answer bytes wait to be sent.
OUTPUT_HIGH_WATER = 64 * 1024
RECV_SIZE = 64 * 1024


@dataclass(eq=False)
class CsrConnection:
    sock: socket.socket
    peer: str
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    events: int = selectors.EVENT_READ
    eof: bool = False
    closed: bool = False


class CsrServer:
    """Serves ``regmap`` on ``host:port`` (``port=0``: any free port, see ``port``)."""

    def __init__(
        self,
        selector: selectors.BaseSelector,
        regmap: RegisterMap,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.selector = selector
        self.regmap = regmap
        self.host = host
        self.connections: list[CsrConnection] = []
        self.closed = False
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(16)
            listener.setblocking(False)
            selector.register(listener, selectors.EVENT_READ, self._accept)
        except BaseException:
            listener.close()
            raise
        self.listener = listener
        self.port: int = listener.getsockname()[1]

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    # -- connections -------------------------------------------------------

    def _accept(self) -> None:
        while not self.closed:
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # e.g. EMFILE: leave it in the backlog, log it
                log.warning("CSR %s:%d: accept failed: %s", self.host, self.port, err)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = CsrConnection(sock, f"{peer[0]}:{peer[1]}")
            self.connections.append(conn)
            self.selector.register(sock, conn.events, lambda c=conn: self._service(c))

    def _service(self, conn: CsrConnection) -> None:
        """Run when the connection is readable or writable: flush, answer, read."""
        if conn.closed:
            return
        try:
            self._pump(conn)
            if not conn.closed and not conn.eof and len(conn.outbuf) < OUTPUT_HIGH_WATER:
                try:
                    data = conn.sock.recv(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    data = None
                if data == b"":
                    conn.eof = True
                elif data:
                    conn.inbuf += data
                    self._pump(conn)
        except OSError as err:  # reset by the peer, broken pipe...
            log.debug("CSR %s: dropped: %s", conn.peer, err)
            self._drop(conn)
            return
        if conn.closed:  # the server was closed during an access
            return
        if conn.eof and not conn.outbuf and len(conn.inbuf) < FRAME_SIZE:
            self._drop(conn)
            return
        self._want(conn)

    def _pump(self, conn: CsrConnection) -> None:
        """Answer buffered requests and send, until out of requests or out of room."""
        while True:
            self._answer(conn)
            self._flush(conn)
            if len(conn.inbuf) < FRAME_SIZE or len(conn.outbuf) >= OUTPUT_HIGH_WATER:
                return

    def _answer(self, conn: CsrConnection) -> None:
        inbuf = conn.inbuf
        done = 0
        while (
            len(inbuf) - done >= FRAME_SIZE
            and len(conn.outbuf) < OUTPUT_HIGH_WATER
            and not conn.closed  # the board may close the server from inside an access
        ):
            frame = bytes(inbuf[done : done + FRAME_SIZE])
            done += FRAME_SIZE
            conn.outbuf += self._handle(frame)
        del inbuf[:done]

    def _handle(self, frame: bytes) -> bytes:
        try:
            request = decode_request(frame)
        except ProtocolError as err:
            log.debug("CSR: bad request %s: %s", frame.hex(), err)
            return encode_response(Status.BAD_REQUEST, err.addr)
        try:
            value = self.regmap.access(request.op, request.addr, request.value)
        except CsrFault as fault:
            return encode_response(fault.status, request.addr)
        except Exception:  # a bug in the board must not take the emulator down
            log.exception("CSR %s %#x failed", request.op.name, request.addr)
            return encode_response(Status.BAD_REQUEST, request.addr)
        return encode_response(Status.OK, request.addr, value)

    def _flush(self, conn: CsrConnection) -> None:
        while conn.outbuf and not conn.closed:
            try:
                sent = conn.sock.send(conn.outbuf)
            except (BlockingIOError, InterruptedError):
                return
            del conn.outbuf[:sent]

    def _want(self, conn: CsrConnection) -> None:
        events = 0
        if not conn.eof and len(conn.outbuf) < OUTPUT_HIGH_WATER:
            events |= selectors.EVENT_READ
        if conn.outbuf:
            events |= selectors.EVENT_WRITE
        if events and events != conn.events:
            conn.events = events
            self.selector.modify(conn.sock, events, lambda c=conn: self._service(c))

    def _drop(self, conn: CsrConnection) -> None:
        if conn.closed:
            return
        conn.closed = True
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        conn.sock.close()
        with contextlib.suppress(ValueError):
            self.connections.remove(conn)

    def close(self) -> None:
        """Close the listener and every connection (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for conn in list(self.connections):
            self._drop(conn)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.listener)
        self.listener.close()
