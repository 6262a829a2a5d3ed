"""How to reach every host, guest and instrument of a running lab, as commands to type.

Printed by ``npabench run --step`` when a test fails (the lab stays up until the
user goes on) and before the lab of a step run with failures is torn down.
"""

from __future__ import annotations

import shlex

from bench.lab import Lab


def lab_access(lab: Lab) -> str:
    """Lines telling a person at the terminal how to look at the lab while it is up."""
    topology = shlex.quote(str(lab.topology_path))
    lines = [f"lab {lab.name} is up. Reach it from another terminal:"]
    lines.append(f"  ssh:   npabench ssh-config {topology} > lab.ssh && ssh -F lab.ssh HOST")
    lines.append(f"  exec:  npabench exec {topology} HOST -- CMD")
    for name, endpoint in lab.endpoints.items():
        lines.append(
            f"    {name:<12} {endpoint.user}@{endpoint.address} port {endpoint.port} "
            f"(key {endpoint.key_file})"
        )
    if lab.guests:
        lines.append(
            f"  guests: npabench status {topology}; npabench dump {topology} GUEST "
            f"({', '.join(lab.guests)})"
        )
    for instrument in lab.topology.instruments:
        resource = lab.instrument_resource(instrument.name)
        lines.append(
            f"  instrument {instrument.name} ({instrument.kind}): {resource}  "
            f"(npabench instrument {topology} {instrument.name} '*IDN?')"
        )
    lines.append(f"  logs of the lab's daemons: {lab.state.directory}")
    return "\n".join(lines)
