"""Hand-made frames for the data-path tests (DP-01 .. DP-11, ``test_dp_*.py``).

A ``Probe`` is ``count`` sequenced, stamped copies of one hand-made frame, sent by the
same agent as the traffic engine's flows; ``send_probes`` sends probes while a checker on
each listener's data interface counts what arrives of each flow, and ``arrivals`` says
where that differs from what was expected (all of a probe, or none of it).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace

from bench.lab import Lab
from bench.ssh import CommandResult, OutputTimeout, RemoteProcess
from bench.traffic.engine import agent_command, install_agent, last_json, wait_ready
from bench.traffic.packets import PacketSpec, Template, build_template
from bench.traffic.route import Egress, resolve_egress

#: Hand-made frames: copies per probe, their pace, and how long a checker waits after the
#: last of them (frames that must not arrive cannot be waited for).
PROBE_FRAMES = 20
PROBE_PPS = 2000
PROBE_IDLE_S = 0.5


# -- hand-made frames ------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """``count`` stamped copies of one hand-made frame, sent by ``source`` on ``iface``."""

    name: str
    source: str
    iface: str
    template: Template
    count: int = PROBE_FRAMES

    @property
    def flow(self) -> int:
        return self.template.spec.flow

    def as_flow(self, flow: int) -> Probe:
        """The same frame as another flow (to tell the phases of a test apart)."""
        return replace(self, template=build_template(replace(self.template.spec, flow=flow)))


@dataclass(frozen=True)
class Seen:
    """What one checker counted of one flow."""

    unique: int
    duplicates: int
    reordered: int


def data_address(lab: Lab, machine: str) -> tuple[str, str]:
    """(interface, IP address) of ``machine``'s data interface."""
    for name, iface, address in lab.data_interfaces():
        if name == machine:
            return iface, address
    raise LookupError(f"{machine} has no addressed data interface")


class FrameMaker:
    """Probes from one machine towards another's data address, with the real MACs unless
    told otherwise (the egress is asked of the source once, as the kernel would choose it)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self._egress: dict[tuple[str, str], Egress] = {}

    def egress(self, source: str, to: str) -> Egress:
        if (source, to) not in self._egress:
            address = data_address(self.lab, to)[1]
            self._egress[source, to] = resolve_egress(self.lab.host(source), address)
        return self._egress[source, to]

    def probe(
        self,
        name: str,
        source: str,
        to: str,
        flow: int,
        *,
        dst_mac: str | None = None,
        src_mac: str | None = None,
        vlan: int | None = None,
        priority: int = 0,
        size: int = 128,
        count: int = PROBE_FRAMES,
    ) -> Probe:
        egress = self.egress(source, to)
        spec = PacketSpec(
            src_mac=src_mac or egress.src_mac,
            dst_mac=dst_mac or egress.dst_mac,
            src_ip=egress.src_ip,
            dst_ip=egress.address,
            vlan=vlan,
            vlan_priority=priority,
            frame_size=size,
            flow=flow,
        )
        return Probe(name, source, egress.interface, build_template(spec), count)


def send_probes(
    lab: Lab, probes: Sequence[Probe], listeners: Sequence[str]
) -> dict[str, dict[int, Seen]]:
    """Send every probe (all at once) while a checker on each listener's data interface counts
    every stamped frame; per listener, what arrived of each flow (absent: nothing)."""
    sources = list(dict.fromkeys(p.source for p in probes))
    for host in lab.hosts([*listeners, *sources]):  # connect in parallel before anything starts
        install_agent(lab, host)
    with ExitStack() as stack:
        checkers = spawn_all(
            stack,
            lab,
            {
                machine: f"{agent_command(lab, lab.host(machine))} recv --iface "
                f"{shlex.quote(data_address(lab, machine)[0])} --idle-exit {PROBE_IDLE_S}"
                for machine in listeners
            },
        )
        for checker in checkers.values():
            wait_ready(checker, "checker")
        sent: dict[int, int] = {}
        for result in run_all(
            lab,
            {
                source: " & ".join(
                    f"{agent_command(lab, lab.host(source))} send --iface {shlex.quote(p.iface)} "
                    f"--frame-hex {p.template.frame.hex()} --payload-at {p.template.payload_at} "
                    f"--flow {p.flow} --pps {PROBE_PPS} --count {p.count}"
                    for p in probes
                    if p.source == source
                )
                + " & wait"
                for source in sources
            },
        ):
            for line in result.stdout.splitlines():
                if line.startswith("{"):
                    report = json.loads(line)
                    sent[report["flow"]] = report["sent"]
        unsent = [
            f"{p.name}: {sent.get(p.flow)}/{p.count}" for p in probes if sent.get(p.flow) != p.count
        ]
        assert not unsent, f"the kernel did not take every probe frame: {unsent}"
        deadline = time.monotonic() + PROBE_IDLE_S + 0.5
        return {m: _checked(c, m, deadline) for m, c in checkers.items()}


def spawn_all(stack: ExitStack, lab: Lab, commands: dict[str, str]) -> dict[str, RemoteProcess]:
    """Start one long-running command per machine, in parallel (a new SSH session costs a few
    hundred ms); each is stopped when ``stack`` closes."""
    with ThreadPoolExecutor(max_workers=len(commands) or 1) as pool:
        futures = {m: pool.submit(lab.host(m).spawn, c) for m, c in commands.items()}
    processes, failures = {}, []
    for machine, future in futures.items():
        try:
            processes[machine] = future.result()
        except Exception as err:  # the others must still be stopped
            failures.append(err)
        else:
            stack.callback(processes[machine].stop)
    if failures:
        raise failures[0]
    return processes


def run_all(lab: Lab, commands: dict[str, str]) -> list[CommandResult]:
    """Run one command per machine on their persistent shells, at once; their results."""
    pending = []
    outcomes: list[CommandResult | Exception] = []
    try:
        for machine, command in commands.items():
            host = lab.host(machine)
            pending.append((host, host.send(command, timeout=30)))
    finally:
        for host, started in pending:  # every one is collected: a host stays busy until then
            try:
                outcomes.append(host.collect(started, check=True))
            except Exception as err:
                outcomes.append(err)
    results = [o for o in outcomes if isinstance(o, CommandResult)]
    if len(results) < len(outcomes):
        raise next(o for o in outcomes if isinstance(o, Exception))
    return results


def _checked(checker: RemoteProcess, machine: str, deadline: float) -> dict[int, Seen]:
    """The checker's counts: it ends by itself after the last frame, or is stopped at the
    deadline when none of ours reached it."""
    try:
        line = checker.read_stdout_line(timeout=max(0.01, deadline - time.monotonic()))
    except OutputTimeout:
        line = None
    report = last_json(f"{line or ''}\n{checker.stop().stdout}", machine, "checker")
    return {
        int(flow): Seen(s["unique"], s["duplicates"], s["reordered"])
        for flow, s in report["flows"].items()
    }


def arrivals(
    seen: dict[str, dict[int, Seen]], expected: Sequence[tuple[Probe, str, bool]], when: str
) -> list[str]:
    """Mismatches between what arrived and ``expected`` (probe, listener, all or none)."""
    wrong = []
    for probe, listener, wanted in expected:
        got = seen[listener].get(probe.flow, Seen(0, 0, 0))
        if wanted and (got.unique, got.duplicates, got.reordered) != (probe.count, 0, 0):
            wrong.append(f"{when}: {probe.name} at {listener}: expected all {probe.count}, {got}")
        if not wanted and got.unique:
            wrong.append(f"{when}: {probe.name} at {listener}: expected none, {got}")
    return wrong
