"""Where a host's frames to an address leave, and to which MAC: asked of the host itself.

The traffic agent writes whole Ethernet frames, so the bench must know the
egress interface, its MAC and the next hop's MAC, exactly as the host's own
kernel would choose them (``ip route get``, then the neighbour table).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from bench.errors import HostError
from bench.ssh import SshHost


@dataclass(frozen=True)
class Egress:
    """How ``host`` reaches ``address``."""

    host: str
    address: str
    interface: str
    src_ip: str
    src_mac: str
    next_hop: str
    dst_mac: str


def resolve_egress(host: SshHost, address: str, timeout: float = 10.0) -> Egress:
    """Egress interface, source address and MACs for frames from ``host`` to ``address``."""
    quoted = shlex.quote(address)
    route_out = host.run(f"ip -j route get {quoted}", timeout=timeout)
    if route_out.exit_status != 0:
        raise HostError(host.name, f"no route to {address}: {route_out.stderr.strip()}")
    route = json.loads(route_out.stdout)[0]
    dev, src = route["dev"], route.get("prefsrc", "")
    hop = route.get("gateway", address)
    # Resolve the next hop's MAC the way the kernel does: let it ARP/ND, then read the table.
    probe = (
        f"ping -c 1 -W 1 {shlex.quote(hop)} >/dev/null 2>&1; "
        f"cat /sys/class/net/{shlex.quote(dev)}/address; "
        f"ip -j neigh show {shlex.quote(hop)} dev {shlex.quote(dev)}"
    )
    out = host.run(probe, timeout=timeout, check=True).stdout.splitlines()
    src_mac = out[0].strip()
    neighbours = json.loads(out[1]) if len(out) > 1 and out[1].strip() else []
    dst_mac = next((n["lladdr"] for n in neighbours if n.get("lladdr")), "")
    if not dst_mac:
        raise HostError(host.name, f"{hop} (next hop to {address}) does not answer ARP/ND on {dev}")
    return Egress(host.name, address, dev, src, src_mac, hop, dst_mac)
