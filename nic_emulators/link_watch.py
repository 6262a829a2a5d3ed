"""The NIC's view of its cable: carrier changes on the uplink, from the kernel's netlink.

A real NIC's PHY tells the driver when light or signal comes and goes; the
emulated NIC learns it the same way the host's tools do — RTM_NEWLINK
notifications (RTMGRP_LINK) for its uplink interface, IFF_LOWER_UP in the
flags. An attenuator or optical switch on that link (the lab's wiring takes
the far end of the veth down) therefore reaches the NIC without the bench
telling it anything.

Netlink's news of a cut comes a little after the cut, though, and a frame sent
into a dead link in between is lost where a real MAC would have held it: so
``look()`` reads the carrier as the kernel has it this instant (one ``pread``
on the sysfs attribute, kept open), for the NIC to call before it sends.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

RTMGRP_LINK = 1
RTM_NEWLINK = 16
IFF_LOWER_UP = 0x10000
_NLMSG = struct.Struct("=IHHII")  # length, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change


class LinkWatch:
    """Calls ``changed(up)`` whenever the carrier of ``interface`` changes."""

    def __init__(self, interface: str, changed: Callable[[bool], None]) -> None:
        self.interface = interface
        self.index = socket.if_nametoindex(interface)
        self.changed = changed
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, RTMGRP_LINK))
        self.sock.setblocking(False)
        self.attribute = os.open(f"/sys/class/net/{interface}/carrier", os.O_RDONLY)
        self.up = carrier(interface)

    def fileno(self) -> int:
        return self.sock.fileno()

    def readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            offset = 0
            while offset + _NLMSG.size <= len(data):
                length, kind, _, _, _ = _NLMSG.unpack_from(data, offset)
                if length < _NLMSG.size:
                    break
                if kind == RTM_NEWLINK and offset + _NLMSG.size + _IFINFO.size <= len(data):
                    _, _, index, flags, _ = _IFINFO.unpack_from(data, offset + _NLMSG.size)
                    if index == self.index:
                        self._seen(bool(flags & IFF_LOWER_UP))
                offset += (length + 3) & ~3

    def look(self) -> bool:
        """The carrier now (reported through ``changed`` at once if it changed)."""
        try:
            up = os.pread(self.attribute, 8, 0).strip() == b"1"
        except OSError:  # EINVAL: the interface is administratively down
            up = False
        self._seen(up)
        return up

    def _seen(self, up: bool) -> None:
        if up != self.up:
            self.up = up
            self.changed(up)

    def close(self) -> None:
        self.sock.close()
        os.close(self.attribute)


def carrier(interface: str) -> bool:
    """Whether ``interface`` has carrier now (sysfs of this namespace)."""
    try:
        return Path(f"/sys/class/net/{interface}/carrier").read_text().strip() == "1"
    except OSError:
        return False
