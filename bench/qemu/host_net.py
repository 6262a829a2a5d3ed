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

A real VF as the primary (a lab host's PF, ``vfio-pci``) is steered as that
documentation does it, with the PF's netdev as the bridge's uplink (the NIC's
``link:``): while the guest holds the VF, the VF has the guest's MAC (``ip link set
PF vf N mac MAC``: the NIC's embedded switch delivers that MAC to it, from the wire
and from the PF) and the bridge sends the guest's frames out of the PF. Steered to
the standby, the bridge sends them to the standby's TAP and the MAC goes into the
PF's own unicast filter (``bridge fdb replace MAC dev PF self``). The VF's MAC is
cleared (:func:`set_vf_mac` with ``NO_MAC``) only once the VF has left the guest (QEMU deleted
the device: a revocation, a migration's unplug), never at the guest's word alone: a
guest that reloads its VF driver, or a VF that QEMU plugs back after a failed
migration, must find the MAC there, since the VF driver takes its MAC from the PF
when it probes (and net_failover pairs the slaves by MAC). It is set again before
the bench plugs the VF back.
"""

from __future__ import annotations

import shlex

from bench.qemu.failover_vm import PrimaryVf
from bench.ssh import SshHost

#: The MAC that clears a VF's (``ip link set PF vf N mac 00:00:00:00:00:00``).
NO_MAC = "00:00:00:00:00:00"

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


def vf_mac_command(vf: PrimaryVf, mac: str) -> str:
    """The PF's command giving the VF ``mac`` (``NO_MAC``: none)."""
    return f"ip link set dev {shlex.quote(vf.pf_netdev)} vf {vf.vf} mac {mac}"


def set_vf_mac(host: SshHost, vf: PrimaryVf, mac: str) -> None:
    """Give the VF ``mac``: the guest's before its VF driver probes (it reads its MAC from
    the PF then), ``NO_MAC`` once the VF has left the guest (the embedded switch then
    hands the guest's frames to the PF, whose filter has the MAC on the standby)."""
    host.run(vf_mac_command(vf, mac), check=True)


def release_vf_mac(host: SshHost, pf_netdev: str, vf: int, mac: str | None) -> None:
    """The guest is gone from this host: its MAC off the VF and (if known) out of the PF's
    unicast filter (each may be gone already)."""
    pf = shlex.quote(pf_netdev)
    command = f"ip link set dev {pf} vf {vf} mac {NO_MAC} 2>/dev/null; "
    if mac:
        command += f"bridge fdb del {mac} dev {pf} self 2>/dev/null; "
    host.run(command + "true")


def steer_commands(
    mac: str,
    to_port: str,
    taps: tuple[str, ...],
    *,
    vf: PrimaryVf | None = None,
    to_vf: bool = False,
) -> list[str]:
    """Commands delivering ``mac``'s inbound frames to bridge port ``to_port`` only (the
    guest's TAPs learn nothing); with a VF primary and ``to_vf``, the VF gets the MAC and
    the PF's filter loses it before the bridge moves to the PF, else the PF's filter gets
    it after the bridge moved to the standby (the VF's MAC is left: see the module)."""
    commands = [f"bridge link set dev {tap} learning off" for tap in taps]
    fdb = f"bridge fdb replace {mac} dev {shlex.quote(to_port)} master static"
    if vf is None:
        return [*commands, fdb]
    pf = shlex.quote(vf.pf_netdev)
    if to_vf:
        return [
            *commands,
            vf_mac_command(vf, mac),
            f"{{ bridge fdb del {mac} dev {pf} self 2>/dev/null; true; }}",
            fdb,
        ]
    return [*commands, fdb, f"bridge fdb replace {mac} dev {pf} self"]


def steer(
    host: SshHost,
    mac: str,
    to_port: str,
    taps: tuple[str, ...],
    *,
    vf: PrimaryVf | None = None,
    to_vf: bool = False,
) -> None:
    """Run :func:`steer_commands` on the host (a failure raises, naming the command)."""
    host.run(" && ".join(steer_commands(mac, to_port, taps, vf=vf, to_vf=to_vf)), check=True)


def unsteer(host: SshHost, mac: str, ports: tuple[str, ...], taps: tuple[str, ...]) -> None:
    """Steering off: drop the static entry, let the bridge learn on the guest's TAPs."""
    commands = [f"bridge fdb del {mac} dev {port} master 2>/dev/null" for port in ports]
    commands += [f"bridge link set dev {tap} learning on" for tap in taps]
    host.run("; ".join(commands) + "; true", check=True)
