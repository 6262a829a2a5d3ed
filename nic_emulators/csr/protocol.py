"""Wire format of the FPGA NIC's CSR (control and status register) socket.

The board's registers are 32-bit, at byte addresses aligned to 4
(``nic_emulators.csr.regmap``). A client reaches them over one TCP
connection with fixed-size binary frames, every field big-endian:

Request, 12 bytes::

    offset  size  field
    0       2     magic   b"CS"
    2       1     op      1 = read, 2 = write
    3       1     flags   0 (reserved)
    4       4     addr    register byte address (u32)
    8       4     value   value to write (u32); 0 for a read

Response, 12 bytes::

    offset  size  field
    0       2     magic   b"CS"
    2       1     status  0 ok, 1 bad address, 2 read-only,
                          3 bad request, 4 powered off / busy
    3       1     flags   0 (reserved)
    4       4     addr    the address of the request it answers (u32)
    8       4     value   the value read, or the value written (u32); 0 on error

Requests may be pipelined: a client may send several before reading any
answer. The server answers every request, in the order received, on the same
connection. A frame with a wrong magic, an unknown op or non-zero flags is
answered with status 3 (bad request) echoing its ``addr`` field; the server
keeps counting in 12-byte frames, so a client that sent garbage should
reconnect rather than trust the framing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"CS"
FRAME_SIZE = 12
U32_MAX = 0xFFFF_FFFF

_FRAME = struct.Struct(">2sBBII")
assert _FRAME.size == FRAME_SIZE


class Op(IntEnum):
    READ = 1
    WRITE = 2


class Status(IntEnum):
    OK = 0
    BAD_ADDRESS = 1
    READ_ONLY = 2
    BAD_REQUEST = 3
    POWERED_OFF = 4


STATUS_TEXT: dict[int, str] = {
    Status.OK: "ok",
    Status.BAD_ADDRESS: "bad address",
    Status.READ_ONLY: "read-only register",
    Status.BAD_REQUEST: "bad request",
    Status.POWERED_OFF: "powered off or busy",
}


def status_text(status: int) -> str:
    """The status in words (also for a code this side does not know)."""
    return STATUS_TEXT.get(status, f"unknown status {status}")


class ProtocolError(ValueError):
    """A frame that is not a valid request or response; ``addr`` is its address field."""

    def __init__(self, message: str, addr: int = 0) -> None:
        super().__init__(message)
        self.addr = addr


@dataclass(frozen=True)
class Request:
    op: Op
    addr: int
    value: int = 0


@dataclass(frozen=True)
class Response:
    status: int
    addr: int
    value: int = 0

    @property
    def ok(self) -> bool:
        return self.status == Status.OK


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value <= U32_MAX:
        raise ValueError(f"{name} {value:#x} does not fit in 32 bits")


def encode_request(op: Op | int, addr: int, value: int = 0) -> bytes:
    """A 12-byte request frame. ``value`` must be 0 for a read."""
    op = Op(op)
    _check_u32("address", addr)
    _check_u32("value", value)
    if op is Op.READ and value:
        raise ValueError("a read request carries value 0")
    return _FRAME.pack(MAGIC, op, 0, addr, value)


def decode_request(frame: bytes) -> Request:
    """Parse one request frame; ProtocolError (with the frame's addr field) if invalid."""
    if len(frame) != FRAME_SIZE:
        raise ProtocolError(f"a request is {FRAME_SIZE} bytes, got {len(frame)}")
    magic, op, flags, addr, value = _FRAME.unpack(frame)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r}", addr)
    if flags != 0:
        raise ProtocolError(f"reserved flags {flags:#04x} set", addr)
    try:
        kind = Op(op)
    except ValueError:
        raise ProtocolError(f"unknown op {op}", addr) from None
    if kind is Op.READ and value:
        raise ProtocolError("a read request carries value 0", addr)
    return Request(kind, addr, value)


def encode_response(status: Status | int, addr: int, value: int = 0) -> bytes:
    """A 12-byte response frame."""
    if not 0 <= status <= 0xFF:
        raise ValueError(f"status {status} does not fit in a byte")
    _check_u32("address", addr)
    _check_u32("value", value)
    return _FRAME.pack(MAGIC, int(status), 0, addr, value)


def decode_response(frame: bytes) -> Response:
    """Parse one response frame; ProtocolError if it is not one."""
    if len(frame) != FRAME_SIZE:
        raise ProtocolError(f"a response is {FRAME_SIZE} bytes, got {len(frame)}")
    magic, status, flags, addr, value = _FRAME.unpack(frame)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r}", addr)
    if flags != 0:
        raise ProtocolError(f"reserved flags {flags:#04x} set", addr)
    return Response(status, addr, value)
