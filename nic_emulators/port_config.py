"""A switch port's configuration and the policy checks every change goes through.

The NIC's embedded switch enforces what the administrator allows a guest
(``PortPolicy``): a guest, or a saved state handed back at VF_INIT, must not
be able to change its MAC, join VLANs, switch off anti-spoofing or raise its
MTU beyond the policy. The checks live here, apart from the forwarding code,
so that every path that changes a port (single settings and whole-config
replacement) applies the same rules with the same messages.

Refusals raise ``PolicyError`` with an errno-like ``code`` the control
channel passes on unchanged (``ControlError`` uses the same vocabulary), and a
message naming the port, the setting, the value asked for and what is allowed:
the person reading a failed switch in a report must see why without the code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nic_emulators.config import PortPolicy
from nic_emulators.frames import VID_MAX, VID_MIN, is_multicast, is_valid_unicast, mac_str

#: SET_MULTICAST takes at most this many addresses (the NPA/UPT filter size).
MULTICAST_LIMIT = 32
#: IPv4's minimum link MTU; nothing smaller can carry an IP packet.
MTU_MIN = 68


class PolicyError(Exception):
    """A port setting was refused; ``code`` is errno-like (EPERM, EINVAL, EBUSY, ENOSPC...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class PortConfig:
    """One VF or vport's switch settings (the uplink has none: it is the wire).

    ``enabled`` is false while a VF is quiesced or a vport is inactive; such a
    port neither sends nor receives. A port starts disabled, because a port
    that is added is not yet serving a guest.
    """

    mac: bytes
    multicast: frozenset[bytes] = frozenset()
    promisc: bool = False
    allmulti: bool = False
    broadcast: bool = True
    #: VLAN ids joined for tagged traffic.
    vlans: frozenset[int] = frozenset()
    #: Port VLAN: the port's untagged traffic is this VLAN on the wire.
    default_vlan: int | None = None
    antispoof: bool = True
    mtu: int = 1500
    enabled: bool = False


def format_ranges(ranges: Iterable[tuple[int, int]]) -> str:
    """``1-10, 20`` (or ``none``): how a message states the VLAN ids a policy allows."""
    parts = [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in ranges]
    return ", ".join(parts) if parts else "none"


def format_ids(ids: Iterable[int]) -> str:
    """Compress sorted ids into ranges for a message (``5-9, 12``)."""
    ranges: list[tuple[int, int]] = []
    for vid in sorted(ids):
        if ranges and ranges[-1][1] == vid - 1:
            ranges[-1] = (ranges[-1][0], vid)
        else:
            ranges.append((vid, vid))
    return format_ranges(ranges)


def _refuse(code: str, port: str, setting: str, value: str, allowed: str) -> PolicyError:
    return PolicyError(code, f"port {port}: {setting} {value} refused: {allowed}")


def check_mac(port: str, current: bytes | None, mac: bytes, policy: PortPolicy) -> None:
    """A port's own address: a valid unicast MAC; a different one only if the policy allows."""
    shown = mac_str(mac) if isinstance(mac, bytes) and len(mac) == 6 else repr(mac)
    if not isinstance(mac, bytes) or not is_valid_unicast(mac):
        raise _refuse("EINVAL", port, "MAC", shown, "a port MAC must be a non-zero unicast MAC")
    if current is not None and mac != current and not policy.mac_change:
        raise _refuse(
            "EPERM", port, "MAC", shown, f"policy forbids MAC changes (MAC is {mac_str(current)})"
        )


def check_multicast(port: str, macs: frozenset[bytes]) -> None:
    """The multicast filter: at most ``MULTICAST_LIMIT`` group addresses."""
    for mac in macs:
        if not isinstance(mac, bytes) or len(mac) != 6 or not is_multicast(mac):
            raise _refuse("EINVAL", port, "multicast address", repr(mac), "not a group address")
    if len(macs) > MULTICAST_LIMIT:
        raise _refuse(
            "ENOSPC",
            port,
            "multicast list of",
            f"{len(macs)} addresses",
            f"the filter holds at most {MULTICAST_LIMIT}; use allmulti for more",
        )


def check_vid(port: str, setting: str, vid: int) -> None:
    if not VID_MIN <= vid <= VID_MAX:
        raise _refuse("EINVAL", port, setting, str(vid), f"VLAN ids are {VID_MIN}-{VID_MAX}")


def check_vlan_range(port: str, lo: int, hi: int) -> None:
    """ADD/DEL_VLAN_RANGE arguments: an inclusive range of valid ids."""
    check_vid(port, "VLAN", lo)
    check_vid(port, "VLAN", hi)
    if lo > hi:
        raise _refuse("EINVAL", port, "VLAN range", f"{lo}-{hi}", "low end above high end")


def check_vlans_allowed(port: str, setting: str, vids: Iterable[int], policy: PortPolicy) -> None:
    """Every id in ``vids`` valid and inside one of the policy's ranges."""
    ids = sorted(set(vids))
    for vid in ids:
        check_vid(port, setting, vid)
    outside = [v for v in ids if not any(lo <= v <= hi for lo, hi in policy.vlans)]
    if outside:
        raise _refuse(
            "EPERM",
            port,
            setting,
            format_ids(outside),
            f"policy allows VLANs {format_ranges(policy.vlans)}",
        )


def check_default_vlan(port: str, vid: int | None, policy: PortPolicy) -> None:
    """The port VLAN is a VLAN the port's traffic joins, so the policy's ranges apply to it."""
    if vid is not None:
        check_vlans_allowed(port, "default VLAN", (vid,), policy)


def check_antispoof(port: str, on: bool, policy: PortPolicy) -> None:
    if not on and policy.antispoof:
        raise _refuse("EPERM", port, "antispoof", "off", "policy requires anti-spoofing")


def check_mtu(port: str, mtu: int, policy: PortPolicy) -> None:
    if not MTU_MIN <= mtu <= policy.mtu_max:
        raise _refuse(
            "EINVAL", port, "MTU", str(mtu), f"policy allows MTU {MTU_MIN}-{policy.mtu_max}"
        )


def check_config(
    port: str, config: PortConfig, policy: PortPolicy, current: PortConfig | None
) -> None:
    """A whole config (add_port, replace_config) under the same rules as single settings.

    ``current`` is the config being replaced (None for a new port): the MAC
    a new port gets is the administrator's, so only a *change* of MAC is
    subject to ``policy.mac_change``.
    """
    check_mac(port, None if current is None else current.mac, config.mac, policy)
    check_multicast(port, frozenset(config.multicast))
    check_vlans_allowed(port, "VLAN", config.vlans, policy)
    check_default_vlan(port, config.default_vlan, policy)
    check_antispoof(port, config.antispoof, policy)
    check_mtu(port, config.mtu, policy)
