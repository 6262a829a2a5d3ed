"""The bench's test-packet payload: what every generated frame carries, and how it is patched.

Standard library only: this module also runs on lab hosts next to the traffic
agent, which is copied there on its own.

Payload (big-endian), at the start of the UDP / ICMP-echo payload::

    0  magic    4s  b"NPAB"
    4  version  B   1
    5  flags    B   0
    6  flow     H   flow id
    8  seq      Q   sequence number, from 0 per flow
    16 tx_ns    Q   send time, time.time_ns() (CLOCK_REALTIME, like kernel rx stamps)
    24 check    I   zlib.crc32 of bytes 0..23: corrupted frames are counted, not believed
    28 comp     H   checksum compensation (below)
    30 fill     ... fixed pattern up to the frame size

Checksum compensation: after seq/tx_ns/check are patched, ``comp`` is set so
that the 16-bit ones'-complement sum of bytes 8..29 is what it was in the
template. The UDP or ICMP checksum computed once for the template (by scapy)
therefore stays valid for every frame, and the hot loop never recomputes it.
Requires the payload to start at an even offset from the start of the
checksummed L4 header (true for UDP and ICMP echo, whose headers are 8 bytes).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"NPAB"
VERSION = 1
HEADER = struct.Struct(">4sBBHQQIH")
HEADER_LEN = HEADER.size  # 30
_STAMPED = struct.Struct(">QQ")  # seq, tx_ns at offset 8
_TAIL = struct.Struct(">QQIH")  # seq, tx_ns, check, comp at offset 8
_WORDS = struct.Struct(">11H")  # bytes 8..29, the part whose sum is kept constant
SEQ_OFFSET = 8
CHECK_OFFSET = 24
COMP_OFFSET = 28


def _fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def words_sum(frame: bytes | bytearray | memoryview, payload_at: int) -> int:
    """Ones'-complement sum of the payload's bytes 8..29 (the patched part)."""
    return _fold(sum(_WORDS.unpack_from(frame, payload_at + SEQ_OFFSET)))


def build_payload(flow: int, size: int) -> bytes:
    """A template payload of ``size`` bytes (at least HEADER_LEN) for ``flow``, seq 0."""
    if size < HEADER_LEN:
        raise ValueError(f"a payload needs at least {HEADER_LEN} bytes, got {size}")
    fill = bytes((i * 7 + 0x5A) & 0xFF for i in range(size - HEADER_LEN))
    head = HEADER.pack(MAGIC, VERSION, 0, flow, 0, 0, 0, 0)
    return head + fill


def head_crc(frame: bytes | bytearray | memoryview, payload_at: int) -> int:
    """CRC32 of the payload's constant first 8 bytes (magic..flow): computed once per flow."""
    return zlib.crc32(frame[payload_at : payload_at + SEQ_OFFSET])


def stamp(  # noqa: PLR0917 - positional on purpose: the generator calls it per frame
    frame: bytearray | memoryview,
    payload_at: int,
    seq: int,
    tx_ns: int,
    target: int,
    head: int | None = None,
) -> None:
    """Write seq, send time, check and compensation into a frame in place.

    ``target`` is ``words_sum`` of the template frame and ``head`` its
    ``head_crc`` (both computed once; ``head`` is computed here if omitted).
    The hot loop of the generator: one pack, one short CRC, integer arithmetic.
    The ones'-complement sum of a value's 16-bit words is the value modulo
    0xFFFF (2**16 = 1 modulo 0xFFFF), so the compensation word needs no
    unpacking of what was written.
    """
    if head is None:
        head = head_crc(frame, payload_at)
    check = zlib.crc32(_STAMPED.pack(seq, tx_ns), head)
    comp = (target - seq - tx_ns - check) % 0xFFFF
    _TAIL.pack_into(frame, payload_at + SEQ_OFFSET, seq, tx_ns, check, comp)


@dataclass(frozen=True)
class Stamp:
    """What a received frame says about itself."""

    flow: int
    seq: int
    tx_ns: int
    intact: bool  # the crc32 matched


def read_stamp(frame: bytes | bytearray | memoryview, payload_at: int) -> Stamp | None:
    """The stamp of a frame, or None if it is not one of ours (no magic there)."""
    if len(frame) < payload_at + HEADER_LEN:
        return None
    magic, version, _, flow, seq, tx_ns, check, _ = HEADER.unpack_from(frame, payload_at)
    if magic != MAGIC or version != VERSION:
        return None
    intact = zlib.crc32(frame[payload_at : payload_at + CHECK_OFFSET]) == check
    return Stamp(flow, seq, tx_ns, intact)
