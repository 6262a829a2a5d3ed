"""The guest's network as the guest itself sees it, read over its serial console.

One command lists every netdev with its upper (``master``) device, state, MAC, driver
and counters; :func:`parse_netdevs` finds the ``net_failover`` master (the netdev
whose slaves share its MAC), its standby (virtio_net) and its primary (its other
slave: a real VF, or the emulated NIC standing in for one). The guest is in
*passthrough* while a primary is enslaved and up (TX takes the primary, and RX on
the standby is dropped), else in *emulation*.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Prints one line per netdev: name, master, operstate, MAC, driver, then counters.
NETDEVS_COMMAND = (
    "for d in /sys/class/net/*; do n=${d##*/}; [ $n = lo ] && continue; "
    "m=$(readlink $d/master); m=${m##*/}; r=$(readlink $d/device/driver); r=${r##*/}; "
    's=$d/statistics; echo "$n ${m:--} $(cat $d/operstate) $(cat $d/address) ${r:--} '
    "$(cat $s/rx_packets) $(cat $s/tx_packets) $(cat $s/rx_bytes) $(cat $s/tx_bytes) "
    '$(cat $s/rx_dropped)"; done'
)

STANDBY_DRIVER = "virtio_net"
COUNTERS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped")


@dataclass(frozen=True)
class Netdev:
    name: str
    master: str
    state: str
    mac: str
    driver: str
    counters: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GuestNet:
    """The guest's failover netdev and its two slaves (either may be absent)."""

    master: Netdev | None
    standby: Netdev | None
    primary: Netdev | None
    netdevs: tuple[Netdev, ...]

    @property
    def mode(self) -> str:
        """``passthrough`` while an enslaved primary is up, else ``emulation``."""
        return (
            "passthrough"
            if self.primary is not None and self.primary.state == "up"
            else "emulation"
        )

    def reason(self) -> str:
        if self.mode == "passthrough":
            return ""
        if self.master is None:
            return "no failover pair: the guest's NIC has no STANDBY feature"
        if self.primary is None:
            return "no primary enslaved (VF unplugged or not offered)"
        return f"primary {self.primary.name} is {self.primary.state}"


def parse_netdevs(output: str) -> GuestNet:
    """What :data:`NETDEVS_COMMAND` printed, understood."""
    netdevs = []
    for line in output.splitlines():
        parts = line.split()
        if len(parts) != 5 + len(COUNTERS) or not all(p.isdigit() for p in parts[5:]):
            continue  # not one of its lines (a stray console message)
        name, upper, state, mac, driver = (p if p != "-" else "" for p in parts[:5])
        counters = dict(zip(COUNTERS, map(int, parts[5:]), strict=True))
        netdevs.append(Netdev(name, upper, state, mac, driver, counters))
    uppers = {n.master for n in netdevs if n.master}
    master = next((n for n in netdevs if n.name in uppers), None)
    slaves = [n for n in netdevs if master is not None and n.master == master.name]
    standby = next((n for n in slaves if n.driver == STANDBY_DRIVER), None)
    primary = next((n for n in slaves if n.driver != STANDBY_DRIVER), None)
    if master is None:  # no failover pair: the virtio NIC is the guest's netdev
        standby = next((n for n in netdevs if n.driver == STANDBY_DRIVER), None)
    return GuestNet(master, standby, primary, tuple(netdevs))


def guest_netdev(net: GuestNet) -> Netdev | None:
    """The netdev carrying the guest's address: the failover master, else the virtio NIC."""
    return net.master or net.standby
