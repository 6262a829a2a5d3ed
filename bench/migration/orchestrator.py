"""Run a live migration under traffic and judge it: the migration orchestrator.

Hypervisor-agnostic: it speaks ``bench.hypervisor.Hypervisor`` and the
traffic engine. Sequenced UDP flows run both ways between the lab's traffic
generator and the guest (and, if asked, a TCP stream into the guest); once
the generators send, the migration starts; when it has ended and the flows
are done, the hypervisor's events are lined up with what the wire saw
(``wire.py``), the figures computed (``figures.py``) and the whole judged
against the topology's ``limits:`` (``verdict.py``).

``migrate`` from the CLI and the LM conformance tests run through here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bench.errors import UsageError
from bench.hypervisor import Hypervisor, MigrationResult, hypervisor_for
from bench.hypervisor.placement import check_destination, nic_at
from bench.lab import Lab
from bench.lab.switch_fdb import learned_port
from bench.migration.defaults import DEFAULT_PPS
from bench.migration.figures import MigrationFigures, figures_of, migration_events
from bench.migration.verdict import Expectation, Verdict, judge
from bench.migration.wire import WireView, wire_view
from bench.progress import Progress, silent
from bench.traffic.engine import GENERATORS_SENDING, TrafficSpec, run_flows
from bench.traffic.results import DirectionResult
from bench.traffic.tcp import TcpContinuity, run_tcp_echo_probe, run_tcp_probe

#: Traffic before the migration starts, and after it ended, so both edges are measured.
LEAD_S = 0.4
TAIL_S = 0.6
#: Bytes per second of the TCP stream into the guest, and of one echoed by a guest's own
#: echo server (``nc -e cat`` in a QEMU guest, emulated by TCG where KVM is unusable).
TCP_RATE = 2e6
ECHO_RATE = 5e4
#: Assumed length of a migration when sizing the traffic (the flows end on schedule), for a
#: hypervisor that does not say (``expected_migration_s``).
EXPECTED_S = 1.5


@dataclass(frozen=True)
class TrafficPlan:
    """Traffic to run during a migration: UDP both ways at ``pps``; TCP if ``tcp``."""

    pps: int = DEFAULT_PPS
    #: None: long enough for the hypervisor's usual migration (its ``expected_migration_s``).
    seconds: float | None = None
    tcp: bool = False
    #: Flow ids are ``flow_base + 1`` (to the guest) and ``+ 2`` (from it): guests
    #: migrating at once need flows of their own.
    flow_base: int = 0
    #: TCP probe port (guests migrating at once need ports of their own).
    tcp_port: int = 5201

    def duration(self) -> float:
        """How long the flows run."""
        return self.seconds if self.seconds is not None else LEAD_S + EXPECTED_S + TAIL_S


@dataclass(frozen=True)
class MigrationRun:
    """One migration as the bench saw it: the hypervisor's account, the wire's, the verdict."""

    result: MigrationResult
    figures: MigrationFigures
    wire: tuple[WireView, ...]
    traffic: tuple[DirectionResult, ...]
    tcp: TcpContinuity | None
    learned: tuple[str, str] | None
    verdict: Verdict
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "result": self.result.to_json(),
            "figures": self.figures.to_json(),
            "wire": [w.to_json() for w in self.wire],
            "traffic": [t.to_json() for t in self.traffic],
            "tcp": None if self.tcp is None else vars(self.tcp),
            "switch_port": list(self.learned) if self.learned else None,
            "verdict": self.verdict.to_json(),
        }


def generator_of(lab: Lab) -> str:
    """The lab's traffic generator (role traffic-generator)."""
    for host in lab.topology.hosts:
        if host.role == "traffic-generator":
            return host.name
    raise UsageError(f"lab {lab.name!r} has no traffic-generator host to measure with")


def migrate_under_traffic(
    lab: Lab,
    guest: str,
    destination: str,
    *,
    traffic: TrafficPlan | None = TrafficPlan(),
    expect: Expectation | None = None,
    fail_at_destination: bool = False,
    during: Callable[[Hypervisor], None] | None = None,
    hypervisor: Hypervisor | None = None,
    progress: Progress = silent,
) -> MigrationRun:
    """Migrate ``guest`` to ``destination`` under ``traffic`` (None: no traffic) and judge it.

    ``during(hypervisor)`` runs in a thread of its own once the migration has
    started (to cancel it, say). ``expect`` defaults to a completed migration,
    with passthrough at the end if the destination offers the guest a VF.
    """
    hv = hypervisor or hypervisor_for(lab)
    if traffic is not None and traffic.seconds is None:
        expected = float(getattr(hv, "expected_migration_s", EXPECTED_S))
        traffic = replace(traffic, seconds=LEAD_S + expected + TAIL_S)
    ceiling = getattr(hv, "probe_pps_limit", None)
    if traffic is not None and ceiling and traffic.pps > ceiling:
        progress(f"traffic at {ceiling} pps, the most this hypervisor's guests answer exactly")
        traffic = replace(traffic, pps=int(ceiling))
    source = hv.host_of(guest)
    check_destination(lab.topology, guest, source, destination)  # bad input before traffic
    expect = expect or Expectation(passthrough_at_end=offers_vf(lab, guest, destination))
    flows: list[DirectionResult] = []
    tcp: list[TcpContinuity] = []
    failures: list[BaseException] = []
    sending = threading.Event()
    workers = []
    if traffic is not None:
        workers.append(_flows_thread(lab, guest, traffic, flows, failures, sending=sending))
        if traffic.tcp:
            workers.append(_tcp_thread(lab, hv, guest, traffic, out=tcp, failures=failures))
    else:
        sending.set()
    for worker in workers:
        worker.start()
    try:
        if not sending.wait(timeout=60):
            raise UsageError("the traffic generators did not start within 60 s")
        if failures:
            raise failures[0]
        time.sleep(LEAD_S if traffic is not None else 0)  # the schedule: traffic first
        progress(f"migrating {guest}: {source} -> {destination}")
        if during:
            workers.append(_side_thread(hv, during, failures))
        result = hv.migrate(guest, destination, fail_at_destination=fail_at_destination)
    finally:
        for worker in workers:
            if worker.is_alive() or worker.ident is not None:
                worker.join()
    if failures:
        raise failures[0]
    figures = figures_of(result)
    window = (  # the downtime of a move; a rollback's pause counts only where declared
        (figures.stopped_at, figures.resumed_at)
        if result.outcome == "completed"
        and figures.stopped_at is not None
        and figures.resumed_at is not None
        else None
    )
    slack_s = float(lab.topology.limits.timeline_slack_ms) / 1000
    # a declared window that is the downtime itself (a move's stop-and-copy) is the downtime
    spans = [(name, span) for name, span in _window_spans(hv, result) if span != window]
    declared = tuple(span for _, span in spans)
    wire = [wire_view(f, window, slack_s, declared) for f in flows]
    learned = _learned(lab, guest)
    verdict = judge(
        result,
        figures,
        wire,
        lab.topology.limits,
        expect,
        learned=learned,
        tcp=tcp[0] if tcp else None,
    )
    t0 = result.started_at
    notes = tuple(
        f"declared by the hypervisor: frames cannot get through {name} "
        f"({(lo - t0) * 1000:.1f} .. {(hi - t0) * 1000:.1f} ms, {(hi - lo) * 1000:.1f} ms); "
        + "lost there: "
        + ", ".join(f"{view.name} {view.lost_declared[index]}" for view in wire)
        for index, (name, (lo, hi)) in enumerate(spans)
    )
    return MigrationRun(
        result, figures, tuple(wire), tuple(flows), tcp[0] if tcp else None, learned, verdict,
        notes,
    )  # fmt: skip


def _window_spans(hv: Hypervisor, result: MigrationResult) -> list[tuple[str, tuple[float, float]]]:
    """Windows besides the downtime in which the hypervisor says frames cannot get through,
    named: between the events its ``outage_windows`` names (a failover guest's eject)."""
    spans = []
    events = migration_events(result)
    for start, end in getattr(hv, "outage_windows", ()):
        begun = next((e.t for e in events if e.name == start), None)
        ended = next((e.t for e in events if e.name == end and begun and e.t >= begun), None)
        if begun is not None and ended is not None:
            spans.append((f"{start} -> {end}", (begun, ended)))
    return spans


def offers_vf(lab: Lab, guest: str, destination: str) -> bool:
    """Whether ``guest`` will find a VF on ``destination``: an npa guest, and a NIC with VFs
    there (free ones: the NIC is asked, on an emulated lab)."""
    host = lab.topology.host(destination)
    mode = lab.topology.guest(guest).nic_mode
    if mode == "failover":  # a QEMU host plugs a primary if its NIC model gives "VFs"
        return any(n.vfs > 0 for n in host.nics)
    if mode != "npa":
        return False
    nic = nic_at(lab.topology, guest, destination)
    if nic is None or nic.vfs == 0:
        return False
    if host.backend != "emulated":
        return True
    with lab.nic_control(destination, nic.name) as control:
        vfs = control.call("STATUS")["vfs"]
    return any(v["state"] == "free" for v in vfs)


def _learned(lab: Lab, guest: str) -> tuple[str, str] | None:
    spec = lab.topology.guest(guest)
    switch = lab.topology.guest_switch(spec)
    if switch is None or any(h.backend != "emulated" for h in lab.topology.hosts):
        return None
    return learned_port(lab.topology, switch, spec.mac)


def _flows_thread(
    lab: Lab,
    guest: str,
    plan: TrafficPlan,
    out: list[DirectionResult],
    failures: list[BaseException],
    *,
    sending: threading.Event,
) -> threading.Thread:
    specs = _specs(generator_of(lab), guest, plan, lab.reflector_address(guest) is not None)

    def progress(message: str) -> None:
        if message.startswith(GENERATORS_SENDING):
            sending.set()

    def run() -> None:
        try:
            out.extend(run_flows(lab, specs, progress))
        except BaseException as err:  # raised again in the caller's thread
            failures.append(err)
        finally:
            sending.set()

    return threading.Thread(target=run, name="migration-traffic")


def _specs(generator: str, guest: str, plan: TrafficPlan, echo: bool) -> list[TrafficSpec]:
    """UDP generator -> guest and guest -> generator (the guest runs the bench's agent), or
    for a guest without it (``echo``: a QEMU guest) ICMP echo, both ways at once."""
    to_guest = TrafficSpec(
        source=generator,
        to=guest,
        pps=plan.pps,
        duration_s=plan.duration(),
        flow=plan.flow_base + 1,
    )
    if echo:
        return [to_guest]
    return [to_guest, replace(to_guest, source=guest, to=generator, flow=plan.flow_base + 2)]


def _tcp_thread(
    lab: Lab,
    hv: Hypervisor,
    guest: str,
    plan: TrafficPlan,
    *,
    out: list[TcpContinuity],
    failures: list[BaseException],
) -> threading.Thread:
    echo_at = lab.reflector_address(guest)
    if echo_at is not None:  # a guest without the bench's agent: its own echo server
        start_echo = getattr(hv, "start_tcp_echo", None)
        if start_echo is None:
            raise UsageError(f"the hypervisor of {guest} cannot start a TCP echo server in it")
        start_echo(guest, plan.tcp_port)
    # Its own SSH connections: the UDP flows' thread uses the lab's.
    own = Lab(lab.topology, lab.topology_path, lab.state)

    def probe() -> TcpContinuity:
        source = generator_of(lab)
        if echo_at is not None:  # read back through the guest's echo: kept slow for it
            return run_tcp_echo_probe(
                own, source, echo_at, duration_s=plan.duration(), rate_bytes_s=ECHO_RATE,
                port=plan.tcp_port,
            )  # fmt: skip
        return run_tcp_probe(
            own, source, guest, duration_s=plan.duration(), rate_bytes_s=TCP_RATE,
            port=plan.tcp_port,
        )  # fmt: skip

    def run() -> None:
        try:
            out.append(probe())
        except BaseException as err:
            failures.append(err)
        finally:
            own.close()

    return threading.Thread(target=run, name="migration-tcp")


def _side_thread(
    hv: Hypervisor, during: Callable[[Hypervisor], None], failures: list[BaseException]
) -> threading.Thread:
    def run() -> None:
        try:
            during(hv)
        except BaseException as err:
            failures.append(err)

    thread = threading.Thread(target=run, name="migration-side")
    thread.start()
    return thread


def describe(run: MigrationRun) -> str:
    """The timeline and the verdict, as ``npabench migrate`` prints them."""
    result, figures = run.result, run.figures
    events = migration_events(result)
    t0 = events[0].t if events else result.started_at
    lines = [
        f"migration of {result.guest}: {result.source} -> {result.destination}: "
        f"{result.outcome}{' (' + result.reason + ')' if result.reason else ''}",
        f"{'ms':>9}  {'host':<8} event",
    ]
    for event in events:
        details = ", ".join(f"{k}={v}" for k, v in event.details.items() if k != "nic")
        lines.append(f"{(event.t - t0) * 1000:9.2f}  {event.host:<8} {event.name}  {details}")
    for view in run.wire:
        lines.append(
            f"{(view.blackout_from - t0) * 1000:9.2f}  {'wire':<8} longest gap {view.name}: "
            f"{view.blackout_ms:.1f} ms (lost {view.lost}: {view.lost_in_downtime} in the "
            f"downtime, "
            + (f"{sum(view.lost_declared)} in declared windows, " if view.declared else "")
            + f"{view.lost_outside} outside)"
        )
    lines += [f"{'':9}  {'':<8} {note}" for note in run.notes]
    lines.append(
        "figures: "
        + ", ".join(
            f"{name} {value:.1f} ms" if value is not None else f"{name} none"
            for name, value in (
                ("downtime (hypervisor)", figures.downtime_ms),
                ("VF release", figures.vf_release_ms),
                ("to passthrough", figures.to_passthrough_ms),
                ("degraded window", figures.degraded_ms),
            )
        )
    )
    lines.append(
        f"guest now on {result.host} in {result.mode}"
        + (f" ({result.plugin})" if result.plugin else f": {result.mode_reason}")
    )
    lines.append(run.verdict.describe())
    return "\n".join(lines)


def timeline_of(run: MigrationRun) -> dict[str, Any]:
    """The run as a report timeline (``bench.report.timeline``): throughput per direction,
    the hypervisor's events of this migration, the blackouts, and the figures."""
    from bench.report.traffic_timeline import TimelineEvent, timeline_from_traffic

    result, figures = run.result, run.figures
    events = [
        TimelineEvent(e.t, f"{e.host}: {e.name}", "hypervisor") for e in migration_events(result)
    ]
    numbers = {
        "downtime ms (hypervisor)": figures.downtime_ms,
        "VF release ms": figures.vf_release_ms,
        "to passthrough ms": figures.to_passthrough_ms,
        "degraded window ms": figures.degraded_ms,
    }
    for view in run.wire:
        numbers[f"blackout ms {view.name}"] = view.blackout_ms
        numbers[f"lost outside downtime {view.name}"] = float(view.lost_outside)
    return timeline_from_traffic(
        run.traffic,
        title=f"migration of {result.guest}: {result.source} -> {result.destination} "
        f"({result.outcome})",
        kind="migration",
        events=events,
        figures={k: float(v) for k, v in numbers.items() if v is not None},
    )
