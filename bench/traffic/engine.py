"""Run sequenced traffic between lab hosts and measure it: the controller's side.

The data path never goes through the controller: the agent (``agent.py``,
standard library only) runs on the hosts, started over SSH as processes the
bench controls and always stops. Two shapes:

* one-way: the destination is a lab host; the checker runs there and counts
  UDP frames from the generator.
* round trip (reflector): the destination is any address whose kernel
  answers ICMP echo (a guest, a plain namespace); the generator sends echo
  requests carrying the payload and the checker on the same host counts the
  replies. No agent is needed on the destination.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from bench.errors import HostError, UsageError
from bench.lab import Lab
from bench.progress import Progress, silent
from bench.ssh import CommandTimeout, RemoteProcess, SshHost
from bench.traffic.packets import PacketSpec, build_template
from bench.traffic.results import DirectionResult, direction_from_agent
from bench.traffic.route import resolve_egress

HERE = Path(__file__).resolve().parent
AGENT_FILES = ("agent.py", "wire.py", "tcp_probe.py")
#: Where the agent is copied on a lab host that does not share our file system.
REMOTE_AGENT_DIR = "/tmp/npabench-agent"
#: The checker stops this long after the last frame arrived.
IDLE_EXIT_S = 0.5
READY_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class TrafficSpec:
    """What to send: from which host, to what, how fast, how long."""

    source: str
    to: str
    pps: int | None  # None: as fast as possible
    duration_s: float
    frame_size: int = 128
    flow: int = 1
    vlan: int | None = None


@dataclass(frozen=True)
class _Plan:
    mode: Literal["one-way", "round-trip"]
    checker_host: str
    checker_iface: str
    dst_ip: str
    label: str


def _plan(lab: Lab, spec: TrafficSpec) -> _Plan:
    """Decide where the checker runs: on the destination host or guest, or back on the source."""
    names = {h.name for h in lab.topology.hosts} | {g.name for g in lab.topology.guests}
    for machine, interface, address in lab.data_interfaces():
        if spec.to in (machine, address):
            if machine == spec.source:
                raise UsageError(f"traffic: {spec.to} is the source itself")
            return _Plan("one-way", machine, interface, address, f"{spec.source} -> {machine}")
    reflector = lab.reflector_address(spec.to)
    if reflector is not None:  # a QEMU guest: its kernel echoes
        return _Plan("round-trip", spec.source, "", reflector, f"{spec.source} <-> {spec.to}")
    if spec.to in names:
        raise UsageError(f"traffic: {spec.to} has no interface with an address")
    try:
        ipaddress.ip_address(spec.to)
    except ValueError:
        known = ", ".join(sorted(names))
        raise UsageError(
            f"traffic: --to {spec.to!r} is neither an address nor a host or guest (known: {known})"
        ) from None
    return _Plan("round-trip", spec.source, "", spec.to, f"{spec.source} <-> {spec.to}")


def agent_command(lab: Lab, host: SshHost, script: str = "agent.py") -> str:
    """How to start ``script`` on ``host``: in place on an emulated host, else from a copy."""
    backend = lab.backend_of(host.name)
    if backend == "emulated":  # same machine, same file system, same Python
        return f"{shlex.quote(sys.executable)} {shlex.quote(str(HERE / script))}"
    return f"python3 {REMOTE_AGENT_DIR}/{script}"


def install_agent(lab: Lab, host: SshHost) -> None:
    """Copy the agent to a host that does not share our file system (lab hosts)."""
    if lab.backend_of(host.name) == "emulated":
        return
    parts = [f"mkdir -p {REMOTE_AGENT_DIR}"]
    for name in AGENT_FILES:
        data = base64.b64encode((HERE / name).read_bytes()).decode()
        parts.append(f"echo {data} | base64 -d > {REMOTE_AGENT_DIR}/{name}")
    host.run(" && ".join(parts), timeout=30, check=True)


def last_json(process_output: str, host: str, what: str) -> dict[str, Any]:
    for line in reversed(process_output.splitlines()):
        if line.startswith("{"):
            loaded: dict[str, Any] = json.loads(line)
            return loaded
    raise HostError(host, f"the traffic {what} printed no result: {process_output[-300:]!r}")


def wait_ready(process: RemoteProcess, what: str) -> None:
    line = process.read_stdout_line(timeout=READY_TIMEOUT_S)
    if line is None or line.strip() != "READY":
        result = process.stop()
        raise HostError(
            process.host,
            f"the traffic {what} did not start: {line!r} {result.stderr.strip()[-300:]}",
        )


@contextmanager
def running(host: SshHost, command: str) -> Iterator[RemoteProcess]:
    process = host.spawn(command)
    try:
        yield process
    finally:
        if process.running:
            process.stop()


@dataclass(frozen=True)
class _Flow:
    """One flow, ready to start: who sends, who checks, and the agents' command lines."""

    spec: TrafficSpec
    label: str
    source: SshHost
    checker: SshHost
    send_cmd: str
    recv_cmd: str


def _prepare(lab: Lab, spec: TrafficSpec) -> _Flow:
    plan = _plan(lab, spec)
    source = lab.host(spec.source)
    checker = lab.host(plan.checker_host)
    egress = resolve_egress(source, plan.dst_ip)
    template = build_template(
        PacketSpec(
            src_mac=egress.src_mac,
            dst_mac=egress.dst_mac,
            src_ip=egress.src_ip,
            dst_ip=plan.dst_ip,
            l4="udp" if plan.mode == "one-way" else "icmp-echo",
            vlan=spec.vlan,
            frame_size=spec.frame_size,
            flow=spec.flow,
        )
    )
    for host in {source.name: source, checker.name: checker}.values():
        install_agent(lab, host)
    checker_iface = plan.checker_iface or egress.interface
    recv_cmd = (
        f"{agent_command(lab, checker)} recv --iface {shlex.quote(checker_iface)} "
        f"--flow {spec.flow} --idle-exit {IDLE_EXIT_S}"
        + (
            " --icmp-echo-reply"
            if plan.mode == "round-trip"
            else f" --udp-sink {template.spec.dport}"  # the checker's host takes it quietly
        )
    )
    rate = f"--pps {spec.pps}" if spec.pps else "--max-rate"
    amount = (
        f"--count {max(1, round(spec.pps * spec.duration_s))}"
        if spec.pps
        else f"--duration {spec.duration_s:g}"
    )
    send_cmd = (
        f"{agent_command(lab, source)} send --iface {shlex.quote(egress.interface)} "
        f"--frame-hex {template.frame.hex()} --payload-at {template.payload_at} "
        f"--flow {spec.flow} {rate} {amount}"
    )
    label = f"{plan.label} ({plan.mode})" if plan.mode == "round-trip" else plan.label
    return _Flow(spec, label, source, checker, send_cmd, recv_cmd)


def reverse(lab: Lab, spec: TrafficSpec) -> TrafficSpec:
    """The same traffic the other way (one-way flows only), as the next flow id."""
    plan = _plan(lab, spec)
    if plan.mode != "one-way":
        raise UsageError(f"traffic: {spec.to} is not a lab host; a round trip has no reverse")
    return replace(spec, source=plan.checker_host, to=spec.source, flow=spec.flow + 1)


#: The progress line run_flows prints once every generator is sending (callers may wait on it).
GENERATORS_SENDING = "generators sending"


def run_flows(
    lab: Lab, specs: Sequence[TrafficSpec], progress: Progress = silent
) -> list[DirectionResult]:
    """Run several flows at once (e.g. both directions); one result per flow, in order.

    Every checker is listening before any generator starts, and every agent
    is stopped at the end whatever happens.
    """
    flow_ids = [s.flow for s in specs]
    if len(set(flow_ids)) != len(flow_ids):
        raise UsageError(f"traffic: flow ids must differ between flows, got {flow_ids}")
    flows = [_prepare(lab, spec) for spec in specs]
    for flow in flows:
        spec = flow.spec
        progress(f"{flow.label}: {spec.pps or 'max'} pps for {spec.duration_s:g} s")
    with ExitStack() as stack:
        receivers = [stack.enter_context(running(f.checker, f.recv_cmd)) for f in flows]
        for receiver in receivers:
            wait_ready(receiver, "checker")
        senders = [stack.enter_context(running(f.source, f.send_cmd)) for f in flows]
        for sender in senders:
            wait_ready(sender, "generator")
        progress(f"{GENERATORS_SENDING}: {len(senders)}")
        sent = [
            s.wait(timeout=f.spec.duration_s + 60).stdout
            for s, f in zip(senders, flows, strict=True)
        ]
        received = []
        for receiver in receivers:
            try:  # it stops by itself once the frames stop coming...
                received.append(receiver.wait(timeout=IDLE_EXIT_S + 5).stdout)
            except CommandTimeout as stopped:  # ...unless none ever came: it was stopped
                received.append(stopped.stdout)
    return [
        direction_from_agent(
            f.label,
            f.spec.flow,
            last_json(out, f.source.name, "generator"),
            last_json(got, f.checker.name, "checker"),
        )
        for f, out, got in zip(flows, sent, received, strict=True)
    ]


def run_traffic(lab: Lab, spec: TrafficSpec, progress: Progress = silent) -> DirectionResult:
    """Send ``spec``'s traffic and return what was measured."""
    return run_flows(lab, [spec], progress)[0]
