"""Blocking client for an FPGA NIC's CSR socket (``nic_emulators.csr.protocol``).

Used by the controller and PF control for FPGA NICs, emulated or real (the
same wire format is served by ``nic_emulators.csr.server``)::

    with CsrClient("127.0.0.1", port) as csr:
        csr.write(REGISTERS["SCRATCH"], 0x1234)
        tx_bytes = csr.read64(vf_register(0, "TX_BYTES_LO"))

Every failure is a ``CsrError`` naming the endpoint, the register (symbolic
name and address) and what went wrong in words. The connection is made on the
first call and kept; it is dropped on any failure of the transport (timeout,
reset, an answer out of step) and remade by the next call, so a late answer to
a timed-out request is never taken for the answer to a later one. Before each
call a kept connection is checked without blocking: if the board closed it
(powered off and on again) or unexpected bytes are waiting, it is replaced
before anything is sent. A request already sent is never re-sent
automatically (a write such as VF_RESET must not happen twice).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterable, Sequence

from nic_emulators.csr.protocol import (
    FRAME_SIZE,
    Op,
    ProtocolError,
    Response,
    Status,
    decode_response,
    encode_request,
    status_text,
)
from nic_emulators.csr.regmap import register_name

#: Requests in flight at most in ``read_many``: small enough for the socket
#: buffers both ways, so the client never blocks sending while the server
#: waits for it to read answers.
PIPELINE_WINDOW = 256


def describe_register(addr: int) -> str:
    """``"SCRATCH (0x0008)"``, or the address alone if it has no name."""
    name = register_name(addr)
    return f"{name} ({addr:#06x})" if name else f"{addr:#06x}"


class CsrError(Exception):
    """A CSR access failed; ``status`` is the board's status code when it answered."""

    def __init__(
        self,
        endpoint: str,
        what: str,
        reason: str,
        *,
        addr: int | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(f"CSR {endpoint}: {what}: {reason}")
        self.endpoint = endpoint
        self.addr = addr
        self.status = status


class _TransportError(Exception):
    """The connection failed mid-exchange (the socket is dropped)."""


class CsrClient:
    """One connection to ``host:port``; ``timeout`` bounds each exchange, in seconds."""

    def __init__(self, host: str, port: int, timeout: float = 2.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._sock: socket.socket | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> CsrClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the connection (a later call reconnects)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    # -- public operations ---------------------------------------------------

    def read(self, addr: int) -> int:
        """The value of the register at ``addr``."""
        return self._run([(Op.READ, addr, 0)], f"read {describe_register(addr)}")[0]

    def write(self, addr: int, value: int) -> None:
        """Write ``value`` (u32) to the register at ``addr``."""
        if not 0 <= value <= 0xFFFF_FFFF:
            raise ValueError(f"value {value:#x} does not fit in a 32-bit register")
        self._run([(Op.WRITE, addr, value)], f"write {value:#x} to {describe_register(addr)}")

    def read_many(self, addrs: Iterable[int]) -> list[int]:
        """Read several registers, pipelined: all requests go out before the answers are read
        (in windows of ``PIPELINE_WINDOW``), which saves a round trip per register."""
        addrs = list(addrs)
        values: list[int] = []
        for start in range(0, len(addrs), PIPELINE_WINDOW):
            window = addrs[start : start + PIPELINE_WINDOW]
            what = f"read {describe_register(window[0])}" + (
                f" and {len(window) - 1} more" if len(window) > 1 else ""
            )
            values += self._run([(Op.READ, addr, 0) for addr in window], what)
        return values

    def read64(self, lo_addr: int) -> int:
        """A 64-bit counter from its _LO register and the _HI one after it.

        Both reads go out together; the board latches the value on the _LO read,
        so the halves belong together.
        """
        name = register_name(lo_addr)
        if name is not None and not name.endswith("_LO"):
            raise ValueError(f"{describe_register(lo_addr)} is not the low half of a counter")
        lo, hi = self._run(
            [(Op.READ, lo_addr, 0), (Op.READ, lo_addr + 4, 0)],
            f"read64 {describe_register(lo_addr)}",
        )
        return hi << 32 | lo

    # -- transport -------------------------------------------------------------

    def _run(self, requests: Sequence[tuple[Op, int, int]], what: str) -> list[int]:
        """Send ``requests`` in one go, read their answers; raise for the first refused one."""
        frames = b"".join(encode_request(op, addr, value) for op, addr, value in requests)
        sock = self._connection(what)
        deadline = time.monotonic() + self.timeout
        try:
            try:
                sock.settimeout(self.timeout)
                sock.sendall(frames)
                answers = self._answers(sock, deadline, [addr for _, addr, _ in requests])
            except TimeoutError:
                raise _TransportError(
                    f"no answer within {self.timeout:g} s (connection dropped; "
                    "the next call reconnects)"
                ) from None
            except (ConnectionResetError, BrokenPipeError):
                raise _TransportError("connection reset by the board (powered off?)") from None
            except OSError as err:
                raise _TransportError(f"connection failed: {err.strerror or err}") from None
        except _TransportError as err:
            self.close()
            addr = requests[0][1] if len(requests) == 1 else None
            raise CsrError(self.endpoint, what, str(err), addr=addr) from None
        values: list[int] = []
        for answer in answers:
            if answer.status != Status.OK:
                raise CsrError(
                    self.endpoint,
                    what if len(answers) == 1 else f"read {describe_register(answer.addr)}",
                    f"status {answer.status} ({status_text(answer.status)})",
                    addr=answer.addr,
                    status=answer.status,
                )
            values.append(answer.value)
        return values

    @staticmethod
    def _answers(sock: socket.socket, deadline: float, addrs: Sequence[int]) -> list[Response]:
        """Read one answer per address in ``addrs``, checking each is for that address."""
        need = FRAME_SIZE * len(addrs)
        buf = bytearray()
        while len(buf) < need:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            data = sock.recv(need - len(buf))
            if not data:
                raise _TransportError("connection closed by the board (powered off?)")
            buf += data
        answers: list[Response] = []
        for i, addr in enumerate(addrs):
            frame = bytes(buf[i * FRAME_SIZE : (i + 1) * FRAME_SIZE])
            try:
                answer = decode_response(frame)
            except ProtocolError as err:
                raise _TransportError(f"not a CSR answer ({err}): {frame.hex()}") from None
            if answer.addr != addr:
                raise _TransportError(
                    f"answer for {describe_register(answer.addr)} to a request for "
                    f"{describe_register(addr)}: out of step"
                )
            answers.append(answer)
        return answers

    def _connection(self, what: str) -> socket.socket:
        """The kept connection if it is still good, else a new one."""
        if self._sock is not None and not self._still_good(self._sock):
            self.close()
        if self._sock is None:
            self._sock = self._connect(what)
        return self._sock

    @staticmethod
    def _still_good(sock: socket.socket) -> bool:
        """True if the peer has not closed and nothing unasked-for is waiting."""
        try:
            sock.setblocking(False)
            try:
                sock.recv(1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                return True
            return False  # EOF (b"") or stray bytes
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                sock.setblocking(True)

    def _connect(self, what: str) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except ConnectionRefusedError:
            raise CsrError(
                self.endpoint,
                what,
                "connection refused — the board may be powered off "
                "(its CSR endpoint goes away with power)",
            ) from None
        except TimeoutError:
            raise CsrError(
                self.endpoint, what, f"no connection within {self.timeout:g} s"
            ) from None
        except OSError as err:
            raise CsrError(self.endpoint, what, f"cannot connect: {err.strerror or err}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
