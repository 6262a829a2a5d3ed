"""Where a lab switch has learned a MAC address: the port, as host and interface.

An emulated lab switch is a Linux bridge (``<lab>-s<k>``) whose ports are the
root-side veths of the hosts' interfaces (``<lab>-h<i>i<j>``); its forwarding
database says which one a MAC was last seen on. A migrated guest's announce
(RARP) must move its MAC to the destination host's port: that is what a
switch "learning the new port" means, read from the switch itself.
"""

from __future__ import annotations

import json
import re
import subprocess

from bench.errors import LabError
from bench.lab import naming
from bench.topology import Topology

_VETH = re.compile(r"^(?P<lab>[a-z0-9]+)-h(?P<host>\d+)i(?P<iface>\d+)$")


def learned_port(topology: Topology, switch: str, mac: str) -> tuple[str, str] | None:
    """(host, interface) whose link ``switch`` last saw ``mac`` on; None if not learned."""
    names = [s.name for s in topology.switches]
    if switch not in names:
        raise LabError(f"no switch {switch!r} in lab {topology.lab.name!r} (switches: {names})")
    bridge = naming.switch_bridge(topology.lab.name, names.index(switch))
    done = subprocess.run(
        ["bridge", "-j", "fdb", "show", "br", bridge],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise LabError(f"bridge fdb show br {bridge}: exit {done.returncode}: {done.stderr}")
    hosts = [h for h in topology.hosts if h.backend == "emulated"]
    for entry in json.loads(done.stdout or "[]"):
        if entry.get("mac", "").lower() != mac.lower() or "permanent" in entry.get("state", ""):
            continue
        match = _VETH.match(str(entry.get("ifname", "")))
        if match and int(match["host"]) < len(hosts):
            host = hosts[int(match["host"])]
            index = int(match["iface"])
            if index < len(host.interfaces):
                return host.name, host.interfaces[index].name
    return None
