"""The QEMU host's side of a guest's network: its bridge, the guests' TAPs, and steering.

Each QEMU host bridges its uplink (the NIC's link) with its guests' TAPs on
``vmbr0``; the host's own address moves to the bridge. A failover guest has two
TAPs with one MAC: the standby's and the primary's.

Steering: net_failover drops what arrives on the standby while a primary is
registered, so inbound frames must go to the primary's TAP exactly while the
guest has the primary, and to the standby's otherwise. A NIC's embedded switch
does that for a VF's MAC; here the bench does it with a static FDB entry on the
bridge (and learning off on the guest's TAPs), moved when the primary comes and
goes — as the net_failover documentation describes. With steering off the bridge
just learns, and inbound traffic stays on the standby's TAP after the primary
appears until the guest happens to transmit on it: the blackout a test shows.
"""

from __future__ import annotations

import shlex

from bench.ssh import SshHost

BRIDGE = "vmbr0"


def tap_names(guest_index: int, instance: int) -> tuple[str, str]:
    """The standby's and the primary's TAP of one QEMU instance of a guest."""
    return f"q{guest_index}s{instance}", f"q{guest_index}p{instance}"


def bridge_commands(uplink: str, mac: str | None, address: str | None) -> list[str]:
    """Shell commands making ``vmbr0`` over ``uplink``, the host's address moved to it."""
    commands = [
        f"ip link add {BRIDGE} type bridge",
        *([f"ip link set {BRIDGE} address {mac}"] if mac else []),
        f"ip link set {shlex.quote(uplink)} master {BRIDGE}",
    ]
    if address:
        commands += [
            f"ip addr del {address} dev {shlex.quote(uplink)}",
            f"ip addr add {address} dev {BRIDGE}",
        ]
    commands.append(f"ip link set {BRIDGE} up")
    return commands


def make_bridge(host: SshHost, uplink: str, mac: str | None, address: str | None) -> None:
    host.run(" && ".join(bridge_commands(uplink, mac, address)), check=True)


def make_taps(host: SshHost, taps: tuple[str, ...], mtu: int) -> None:
    """Make the TAPs (QEMU opens them by name) as ports of ``vmbr0``."""
    commands = []
    for tap in taps:
        commands += [
            f"ip tuntap add dev {tap} mode tap",
            f"ip link set {tap} mtu {mtu} master {BRIDGE} up",
        ]
    host.run(" && ".join(commands), check=True)


def remove_taps(host: SshHost, taps: tuple[str, ...]) -> None:
    """Remove the TAPs (gone already: not an error)."""
    host.run("; ".join(f"ip link del {tap} 2>/dev/null" for tap in taps) + "; true")


def steer(host: SshHost, mac: str, to_tap: str, taps: tuple[str, ...]) -> None:
    """Deliver ``mac``'s inbound frames to ``to_tap`` only (the guest's TAPs learn nothing)."""
    commands = [f"bridge link set dev {tap} learning off" for tap in taps]
    commands.append(f"bridge fdb replace {mac} dev {to_tap} master static")
    host.run(" && ".join(commands), check=True)


def unsteer(host: SshHost, mac: str, taps: tuple[str, ...]) -> None:
    """Steering off: drop the static entry, let the bridge learn on the guest's TAPs."""
    commands = [f"bridge fdb del {mac} dev {tap} master 2>/dev/null" for tap in taps]
    commands += [f"bridge link set dev {tap} learning on" for tap in taps]
    host.run("; ".join(commands) + "; true", check=True)
