"""Checksums a sending interface left to "hardware": completed as a sending NIC would.

A veth hands the other end frames whose TCP/UDP checksum is not computed yet
(CHECKSUM_PARTIAL: the kernel counts on the transmitting NIC to do it). The
packet socket flags such a frame TP_STATUS_CSUMNOTREADY. On a real wire every
frame carries its checksum, so the NIC emulator, which takes its uplink's
frames as a NIC takes them off the wire, completes the checksum first; else a
guest's kernel would drop every TCP segment from a host that offloads (ping
and the bench's own UDP traffic, checksummed in software, would still pass).
"""

from __future__ import annotations

import sys
from array import array

TCP, UDP = 6, 17
#: Where the checksum sits in the transport header.
_CSUM_OFFSET = {TCP: 16, UDP: 6}


def internet_checksum(data: bytes) -> int:
    """RFC 1071 over ``data``, summed 16 bits at a time in C (``array``)."""
    if len(data) % 2:
        data += b"\0"
    words = array("H", data)
    if sys.byteorder == "little":
        words.byteswap()
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def complete_checksum(frame: bytes) -> bytes:
    """``frame`` with its IPv4/IPv6 TCP or UDP checksum computed (others unchanged)."""
    l2 = 18 if frame[12:14] in (b"\x81\x00", b"\x88\xa8") else 14
    ethertype = frame[l2 - 2 : l2]
    if ethertype == b"\x08\x00" and len(frame) >= l2 + 20:
        ihl = (frame[l2] & 0x0F) * 4
        proto = frame[l2 + 9]
        total = int.from_bytes(frame[l2 + 2 : l2 + 4], "big")
        start, end = l2 + ihl, l2 + total
        pseudo = frame[l2 + 12 : l2 + 20] + bytes([0, proto])
    elif ethertype == b"\x86\xdd" and len(frame) >= l2 + 40:
        proto = frame[l2 + 6]
        start = l2 + 40
        end = start + int.from_bytes(frame[l2 + 4 : l2 + 6], "big")
        pseudo = frame[l2 + 8 : l2 + 40] + bytes([0, proto])
    else:
        return frame
    offset = _CSUM_OFFSET.get(proto)
    if offset is None or end > len(frame) or end - start < offset + 2:
        return frame
    segment = bytearray(frame[start:end])
    segment[offset : offset + 2] = b"\0\0"
    value = internet_checksum(pseudo + (end - start).to_bytes(2, "big") + bytes(segment))
    if proto == UDP and value == 0:
        value = 0xFFFF
    segment[offset : offset + 2] = value.to_bytes(2, "big")
    return frame[:start] + bytes(segment) + frame[end:]
