"""Ethernet and 802.1Q header helpers shared by the embedded switch and its callers.

Only the 14-byte Ethernet header and the optional 4-byte 802.1Q tag are ever
looked at: the switch forwards on addresses and VLAN ids, never on payload,
so everything here is byte slicing (cheap enough for the per-frame path) and
nothing builds objects per frame. 802.1ad (0x88a8) outer tags are not
recognised: such a frame counts as untagged, as it would on a NIC whose
eswitch only knows 802.1Q.
"""

from __future__ import annotations

import struct

#: Ethernet header without a VLAN tag: destination, source, EtherType.
ETH_HLEN = 14
#: Length of one 802.1Q tag (TPID + TCI).
VLAN_HLEN = 4
#: The 802.1Q tag protocol identifier, as it appears at offset 12 of a tagged frame.
TPID = b"\x81\x00"
BROADCAST = b"\xff\xff\xff\xff\xff\xff"
ZERO_MAC = b"\x00\x00\x00\x00\x00\x00"
#: Valid VLAN ids: 0 means "priority tag only" and 4095 is reserved.
VID_MIN = 1
VID_MAX = 4094
#: Returned by ``frame_vid`` for an untagged frame.
UNTAGGED = -1


def is_multicast(mac: bytes) -> bool:
    """Group address (multicast or broadcast): the I/G bit of the first octet."""
    return bool(mac[0] & 1)


def is_valid_unicast(mac: bytes) -> bool:
    """What a port's own address may be (Linux ``is_valid_ether_addr``): 6 bytes, unicast, not 0."""
    return len(mac) == 6 and not mac[0] & 1 and mac != ZERO_MAC


def mac_str(mac: bytes) -> str:
    """``aa:bb:cc:dd:ee:ff``: MACs in messages read the way ``ip link`` prints them."""
    return mac.hex(":")


def parse_mac(text: str) -> bytes:
    """Inverse of ``mac_str``; raises ValueError on anything but six colon-separated octets."""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes.fromhex("".join(parts))


def vlan_tag(vid: int, pcp: int = 0) -> bytes:
    """The 4 bytes inserted after the source MAC to tag a frame with ``vid``."""
    return TPID + ((pcp << 13) | vid).to_bytes(2, "big")


def is_tagged(frame: bytes) -> bool:
    return frame[12:14] == TPID


def frame_vid(frame: bytes) -> int:
    """VLAN id of an 802.1Q-tagged frame (priority bits ignored), ``UNTAGGED`` otherwise."""
    if frame[12:14] != TPID:
        return UNTAGGED
    return ((frame[14] & 0x0F) << 8) | frame[15]


def insert_tag(frame: bytes, tag: bytes) -> bytes:
    """``frame`` with ``tag`` (from ``vlan_tag``) after the source MAC."""
    return frame[:12] + tag + frame[12:]


def strip_tag(frame: bytes) -> bytes:
    """``frame`` without its (first) 802.1Q tag; the caller knows it is tagged."""
    return frame[:12] + frame[16:]


def rarp(mac: str) -> bytes:
    """A RARP request from ``mac`` (EtherType 0x8035), padded to the 60-byte minimum."""
    own = bytes.fromhex(mac.replace(":", ""))
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 3) + own + bytes(4) + own + bytes(4)
    return (b"\xff" * 6 + own + b"\x80\x35" + body).ljust(60, b"\0")
