"""Conformance DP-01 .. DP-11: the NPA data path and plugin interface, measured.

Every test sends sequenced, stamped frames (the traffic engine's flows, or
hand-made frames sent by the same agent: ``send_probes``) and reads the
devices' own state: the guest's vmxnet3 device (mode, reason, emulation
counters), its driver (the shell: counters, buffer accounting, errors) and the
NIC (VF state, queue statistics, switch port configuration and counters).
Thresholds come from the topology's ``limits:``; the rates and frame counts
below are test parameters, not pass criteria.

The tests share one lab. ``cleanup`` puts every NPA guest in passthrough
before a test, runs the undo steps a test registered next to each change
(newest first) afterwards, and fails the test's teardown if a guest's port
configuration is not what it found.

Longer than the house ~400 lines on purpose: one file per catalogue section,
and the probe helpers below are only used here.
"""

from __future__ import annotations

import json
import shlex
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from scapy.utils import RawPcapReader

from bench.lab import Lab
from bench.ssh import CommandResult, OutputTimeout, RemoteProcess
from bench.traffic import wire
from bench.traffic.capture import capture
from bench.traffic.engine import (
    TrafficSpec,
    agent_command,
    install_agent,
    last_json,
    run_flows,
    running,
    wait_ready,
)
from bench.traffic.packets import PacketSpec, Template, build_template
from bench.traffic.results import DirectionResult
from bench.traffic.route import Egress, resolve_egress
from nic_emulators.control import ControlError
from nic_emulators.models import MODELS, NicModel
from tests.conformance import kit

#: DP-02's configured rate and duration (both ways at once).
RATE_PPS = 5000
RATE_SECONDS = 2.0
#: Short exactness checks (a guest in emulation after a refusal or a fault).
CHECK_PPS = 2000
CHECK_SECONDS = 0.5
#: DP-03: a burst beyond the TX ring (4095 descriptors on alpha) by less than the guest's
#: TAP queue holds (1000: what waits there while the ring is full must not overflow it),
#: paced so that the ring fills well within the shell's TX watchdog (200 ms) yet no faster
#: than the shell reads its TAP. The frames that leave before the pause takes effect
#: (~35 a millisecond) come out of the margin.
BURST_FRAMES = 5000
BURST_PPS = 35_000
#: Hand-made frames: copies per probe, their pace, and how long a checker waits after the
#: last of them (frames that must not arrive cannot be waited for).
PROBE_FRAMES = 20
PROBE_PPS = 2000
PROBE_IDLE_S = 0.5
MODES = ("passthrough", "emulation")
#: Multicast groups (IPv4-mapped MACs): two the guest joins, one it never joins.
JOINED_GROUPS = ("01:00:5e:4e:50:01", "01:00:5e:4e:50:02")
OTHER_GROUP = "01:00:5e:4e:50:63"
UNKNOWN_UNICAST = "02:4e:50:00:0f:0f"
FORGED_MAC = "02:4e:50:00:0f:99"
BROADCAST = "ff:ff:ff:ff:ff:ff"


# -- the devices -------------------------------------------------------------------


def device_call(lab: Lab, guest: str, op: str, **args: Any) -> dict[str, Any]:
    """An operation on ``guest``'s vmxnet3 device (the hypervisor side)."""
    with lab.guest_control(guest) as device:
        return device.call(op, **args)


def driver_call(lab: Lab, guest: str, op: str, **args: Any) -> dict[str, Any]:
    """An operation on ``guest``'s driver (the shell: the guest's own view)."""
    with lab.guest_driver(guest) as driver:
        return driver.call(op, **args)


def nic_call(lab: Lab, guest: str, op: str, **args: Any) -> dict[str, Any]:
    """An operation on the NIC ``guest`` takes its VFs from."""
    with lab.guest_nic(guest) as nic:
        return nic.call(op, **args)


def nic_model(lab: Lab, guest: str) -> NicModel:
    nic = lab.topology.guest_nic(lab.topology.guest(guest))
    assert nic is not None and nic.model is not None, f"{guest} has no modelled SR-IOV NIC"
    return MODELS[nic.model]


def vf_state(lab: Lab, guest: str, vf: int) -> dict[str, Any]:
    """VF ``vf`` as the NIC's STATUS describes it (state, owner, features, fault, counters)."""
    vfs: list[dict[str, Any]] = nic_call(lab, guest, "STATUS")["vfs"]
    (found,) = [v for v in vfs if v["vf"] == vf]
    return found


def owned_vfs(lab: Lab, guest: str) -> list[int]:
    return [v["vf"] for v in nic_call(lab, guest, "STATUS")["vfs"] if v["owner"] == guest]


def queue_stats(lab: Lab, guest: str, vf: int) -> Counter[str]:
    """GET_QUEUE_STATS of ``vf``, summed over its queues: what changed since the last read."""
    total: Counter[str] = Counter()
    for queue in nic_call(lab, guest, "GET_QUEUE_STATS", vf=vf)["queues"]:
        total.update(queue)
    return total


def counters(lab: Lab, guest: str) -> dict[str, int]:
    found: dict[str, int] = kit.driver_status(lab, guest)["counters"]
    return found


def put_in(lab: Lab, guest: str, mode: str) -> dict[str, Any]:
    """Switch ``guest`` to ``mode`` unless it is there; its status once it is."""
    if kit.status(lab, guest)["mode"] != mode:
        kit.switch(lab, guest, mode)
    return kit.wait_mode(lab, guest, mode)


def port_of(status: dict[str, Any]) -> str:
    """The switch port a guest's frames use now: its VF's, or its vport in emulation."""
    return f"vf{status['vf']}" if status["mode"] == "passthrough" else f"vport:{status['guest']}"


def port_config(lab: Lab, guest: str, port: str | None = None) -> dict[str, Any]:
    return nic_call(lab, guest, "PORT_CONFIG", port=port or f"vport:{guest}")


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``condition`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.01)


def both_exact(results: Sequence[DirectionResult], what: str) -> None:
    problems = [p for p in map(kit.exact, results) if p]
    assert not problems, f"{what}: " + "; ".join(problems)


# -- leaving the lab as it was found -------------------------------------------------


class Cleanup:
    """Undo steps registered next to the change they undo; run newest first."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def defer(self, what: str, step: Callable[[], object]) -> None:
        self._steps.append((what, step))

    def run(self) -> list[str]:
        failures = []
        while self._steps:
            what, step = self._steps.pop()
            try:
                step()
            except Exception as err:  # every step runs; all failures are reported
                failures.append(f"undo {what}: {type(err).__name__}: {err}")
        return failures


@pytest.fixture
def guest(lab: Lab) -> str:
    """The first guest that can use a VF (npa mode, host NIC with VFs)."""
    guests = kit.npa_guests(lab)
    if not guests:
        pytest.skip("no guest in npa mode on a host with an SR-IOV NIC")
    return guests[0]


def sharing_nic(lab: Lab, guest: str) -> list[str]:
    """The NPA guests taking VFs from ``guest``'s NIC, ``guest`` first: the ones these tests
    touch (a NIC-wide lever, such as the features its VFs offer, reaches all of them)."""
    topology = lab.topology
    mine = topology.guest(guest)
    return [guest] + [
        name
        for name in kit.npa_guests(lab)
        if name != guest
        and topology.guest(name).host == mine.host
        and topology.guest_nic(topology.guest(name)) == topology.guest_nic(mine)
    ]


@pytest.fixture
def neighbour(lab: Lab, guest: str) -> str:
    """Another NPA guest on the same host and NIC as ``guest``."""
    others = sharing_nic(lab, guest)[1:]
    if not others:
        pytest.skip(f"no second NPA guest on {guest}'s NIC")
    return others[0]


def lab_view(lab: Lab, guests: Sequence[str]) -> dict[str, Any]:
    """What a test may change and must put back: each guest's port configuration, plugin
    fault and installed plugins; each NIC's free interrupt vectors and offered features."""
    view: dict[str, Any] = {}
    for name in guests:
        driver = kit.driver_status(lab, name)
        nic = nic_call(lab, name, "STATUS")
        vport = f"vport:{name}"
        config = port_config(lab, name) if vport in nic["vports"] else None
        view[name] = (config, driver["plugin_fault"], driver["installed"])
        view[nic["nic"]] = (nic["vectors_free"], [v["offered"] for v in nic["vfs"]])
    return view


@pytest.fixture
def cleanup(lab: Lab, guest: str) -> Iterator[Cleanup]:
    """The guests on ``guest``'s NIC in passthrough before; after, the test's undo steps,
    those guests in passthrough again and as they were found (else the teardown fails)."""
    guests = sharing_nic(lab, guest)
    for name in guests:
        kit.ensure_passthrough(lab, name)
    found = lab_view(lab, guests)
    undo = Cleanup()
    yield undo
    failures = undo.run()
    for name in guests:
        try:
            kit.ensure_passthrough(lab, name)
        except AssertionError as err:
            failures.append(str(err))
    left = lab_view(lab, guests)
    failures += [f"{k}: left as {left[k]}, found as {v}" for k, v in found.items() if left[k] != v]
    assert not failures, "the test did not leave the lab as it found it:\n" + "\n".join(failures)


def reset_port(lab: Lab, guest: str, found: dict[str, Any]) -> None:
    """Back to the filters of ``found`` (a PORT_CONFIG), through the device, in either mode."""
    device_call(lab, guest, "filter", set="multicast", macs=found["multicast"])
    device_call(
        lab, guest, "filter", set="rx_mode", promisc=found["promisc"], allmulti=found["allmulti"]
    )
    device_call(lab, guest, "filter", set="del_vlans", lo=1, hi=4094)
    for vid in found["vlans"]:
        device_call(lab, guest, "filter", set="add_vlans", lo=vid, hi=vid)
    device_call(lab, guest, "filter", set="default_vlan", vlan=found["default_vlan"])
    device_call(lab, guest, "filter", set="mtu", mtu=found["mtu"])


def filters(lab: Lab, guest: str, cleanup: Cleanup) -> Callable[..., dict[str, Any]]:
    """A ``filter`` call on the guest's device whose every change is undone after the test."""
    found = port_config(lab, guest)
    cleanup.defer(f"{guest}'s filters", lambda: reset_port(lab, guest, found))

    def call(setting: str, **args: Any) -> dict[str, Any]:
        return device_call(lab, guest, "filter", set=setting, **args)

    return call


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


# -- DP-01 -------------------------------------------------------------------------------


@pytest.mark.catalogue("DP-01")
@pytest.mark.requires("guests", "nic:sriov")
def test_dp01_the_plugin_the_vf_names_is_loaded(lab: Lab, guest: str, cleanup: Cleanup) -> None:
    """Steps: read the guest's device, its driver and its NIC. Verify: in passthrough, the
    plugin loaded is the one the NIC's model names for its VFs, and it drives the VF the
    device holds."""
    model = nic_model(lab, guest)
    status = kit.status(lab, guest)
    driver = kit.driver_status(lab, guest)
    assert (status["mode"], status["plugin"]) == ("passthrough", model.plugin), status
    assert (driver["plugin"], driver["tx_path"]) == (model.plugin, "vf"), driver
    vf = vf_state(lab, guest, status["vf"])
    assert (vf["state"], vf["owner"]) == ("active", guest), vf


@pytest.mark.catalogue("DP-01")
@pytest.mark.requires("guests", "nic:sriov")
@pytest.mark.parametrize("mismatch", ["another-vendor", "old-major-version"])
def test_dp01_a_mismatched_plugin_is_refused_and_the_guest_stays_in_emulation(
    lab: Lab, guest: str, cleanup: Cleanup, mismatch: str
) -> None:
    """Steps: install, under the name the VF asks for, another vendor's plugin (or an old
    major version of the right one); switch to emulation, then ask for passthrough; send
    traffic; remove the override and ask again. Verify: the switch is refused with the
    loader's reason, the VF is released, the guest stays in emulation with a reason naming
    the refusal and carries traffic exactly; with the right plugin it returns to passthrough."""
    model = nic_model(lab, guest)
    if mismatch == "another-vendor":
        other = next(m for m in MODELS.values() if m.vendor != model.vendor)
        module = f"drivers.plugins.{other.plugin}"
        refusal = f"(vendor {other.vendor}) is not the plugin {model.plugin!r}"
    elif model.plugin == "alpha":
        module = "drivers.plugins.alpha_legacy"
        refusal = f"needs version {model.plugin_version} (major version differs)"
    else:
        pytest.skip(f"an old build exists for the alpha plugin only, not {model.plugin}")
    driver_call(lab, guest, "install-plugin", name=model.plugin, module=module)
    cleanup.defer(
        "plugin override",
        lambda: driver_call(lab, guest, "install-plugin", name=model.plugin, module=None),
    )
    put_in(lab, guest, "emulation")
    with pytest.raises(ControlError) as refused:
        kit.switch(lab, guest, "passthrough")
    assert refusal in str(refused.value), (
        f"the switch failed, but not for the plugin: {refused.value}"
    )
    status = kit.wait_mode(lab, guest, "emulation")
    assert "refused the VF" in status["reason"] and refusal in status["reason"], status["reason"]
    assert status["vf"] is None and owned_vfs(lab, guest) == [], "the refused VF must be released"
    assert any(refusal in e for e in kit.driver_status(lab, guest)["errors"]), (
        "the guest must log it"
    )
    both_exact(run_flows(lab, kit.both_ways(lab, guest, CHECK_PPS, CHECK_SECONDS)), "in emulation")
    driver_call(lab, guest, "install-plugin", name=model.plugin, module=None)
    back = kit.switch(lab, guest, "passthrough")
    assert back["mode"] == "passthrough", back
    assert kit.status(lab, guest)["plugin"] == model.plugin


# -- DP-02 -------------------------------------------------------------------------------


@pytest.mark.catalogue("DP-02")
@pytest.mark.requires("guests", "nic:sriov")
def test_dp02_passthrough_carries_sequenced_traffic_both_ways_exactly(
    lab: Lab, guest: str, cleanup: Cleanup
) -> None:
    """Steps: sequenced UDP generator->guest and guest->generator at the configured rate, at
    once; read the VF's queue statistics, the device's emulation counters and the guest's
    counters before and after. Verify: 0 lost, 0 duplicated, 0 reordered both ways; every
    frame went through the VF (its queue statistics count them) and none through emulation;
    no switch happened meanwhile."""
    before = kit.status(lab, guest)
    vf = before["vf"]
    queue_stats(lab, guest, vf)  # GET_QUEUE_STATS reports deltas: this read is the baseline
    guest_before = counters(lab, guest)
    results = run_flows(lab, kit.both_ways(lab, guest, RATE_PPS, RATE_SECONDS))
    to_guest, from_guest = results
    through_vf = queue_stats(lab, guest, vf)
    after = kit.status(lab, guest)
    guest_after = counters(lab, guest)
    both_exact(results, f"passthrough at {RATE_PPS} pps")
    assert to_guest.sent == from_guest.sent == round(RATE_PPS * RATE_SECONDS)
    assert (after["mode"], after["vf"], after["history"][-1:]) == (
        "passthrough", vf, before["history"][-1:],
    ), f"a switch happened during the run: {after['history'][-1]}"  # fmt: skip
    assert through_vf["rx_packets"] >= to_guest.sent, f"VF {vf} received only {through_vf}"
    assert through_vf["tx_packets"] >= from_guest.sent, f"VF {vf} sent only {through_vf}"
    emulated = {
        k: after["emulation"][k] - before["emulation"][k] for k in ("tx_packets", "rx_packets")
    }
    assert emulated == {"tx_packets": 0, "rx_packets": 0}, f"frames took emulation: {emulated}"
    guest_delta = {k: guest_after[k] - guest_before[k] for k in guest_after}
    assert guest_delta["emu_tx_packets"] == guest_delta["emu_rx_packets"] == 0, guest_delta
    assert guest_delta["vf_rx_packets"] >= to_guest.sent, guest_delta
    assert guest_delta["vf_tx_packets"] >= from_guest.sent, guest_delta


# -- DP-03 -------------------------------------------------------------------------------


@pytest.mark.catalogue("DP-03")
@pytest.mark.requires("guests", "nic:sriov")
def test_dp03_a_full_tx_ring_makes_the_shell_requeue_without_loss(
    lab: Lab, guest: str, cleanup: Cleanup
) -> None:
    """Steps: the guest starts a sequenced burst towards the generator, larger than its VF's
    TX ring; the NIC stops serving that ring (flow control, PAUSE) until the ring is full,
    then serves it again. Verify: the ring was full (the device holds a ring's worth of
    posted descriptors), the plugin returned "ring full" and the shell requeued (its
    counter, nothing dropped), the guest stayed in passthrough on its VF, and every frame
    reached the generator exactly once, in order."""
    ring = nic_model(lab, guest).ring_size
    if ring >= BURST_FRAMES:
        pytest.skip(f"a burst of {BURST_FRAMES} does not overflow a {ring}-descriptor ring")
    gen = kit.generator(lab)
    vf = kit.status(lab, guest)["vf"]
    burst = FrameMaker(lab).probe("burst", guest, gen, flow=31, count=BURST_FRAMES)
    source, checker_host = lab.hosts([guest, gen])
    install_agent(lab, source)
    install_agent(lab, checker_host)
    before = counters(lab, guest)
    recv = (
        f"{agent_command(lab, checker_host)} recv --iface {shlex.quote(data_address(lab, gen)[0])} "
        f"--flow {burst.flow} --idle-exit 0.5"
    )
    send = (
        f"{agent_command(lab, source)} send --iface {shlex.quote(burst.iface)} "
        f"--frame-hex {burst.template.frame.hex()} --payload-at {burst.template.payload_at} "
        f"--flow {burst.flow} --pps {BURST_PPS} --count {burst.count}"
    )
    posted, ring_full = 0, 0
    with running(checker_host, recv) as checker:
        wait_ready(checker, "checker")
        with running(source, send) as sender:
            wait_ready(sender, "generator")  # it sends from now on
            cleanup.defer("PAUSE", lambda: nic_call(lab, guest, "PAUSE", vf=vf, on=False))
            with lab.guest_nic(guest) as nic, lab.guest_driver(guest) as driver:
                nic.call("PAUSE", vf=vf, on=True)
                try:  # until the device holds a full ring and the shell met "ring full"
                    deadline = time.monotonic() + 1.0
                    while not ring_full and time.monotonic() < deadline:
                        if posted < ring - 1:  # descriptors posted and not taken
                            queues = nic.call("GET_QUEUE_STATUS", vf=vf).get("queues")
                            if queues is None:
                                break  # the VF has no rings any more: it left the guest
                            posted = max((q["tx_tail"] - q["tx_head"]) % 2**32 for q in queues)
                        else:
                            now = driver.call("status")["counters"]["tx_ring_full"]
                            ring_full = now - before["tx_ring_full"]
                finally:
                    nic.call("PAUSE", vf=vf, on=False)
            sent = last_json(sender.wait(timeout=30).stdout, guest, "generator")
        got = last_json(checker.wait(timeout=30).stdout, gen, "checker")
    after, status = counters(lab, guest), kit.status(lab, guest)
    assert (status["mode"], status["vf"]) == ("passthrough", vf), status["reason"]
    assert posted == ring - 1, f"the TX ring never filled: at most {posted} of {ring - 1} posted"
    assert ring_full > 0, "the plugin never reported ring full while the ring was full"
    assert after["tx_dropped"] == before["tx_dropped"], "the shell dropped frames"
    flow = got["flows"].get(str(burst.flow), {})
    outcome = (sent["sent"], flow.get("unique"), flow.get("duplicates"), flow.get("reordered"))
    assert outcome == (BURST_FRAMES, BURST_FRAMES, 0, 0), (
        f"sent, unique, duplicated, reordered = {outcome}; missing {flow.get('missing', [])[:5]}"
    )


# -- DP-04 -------------------------------------------------------------------------------


@pytest.mark.catalogue("DP-04")
@pytest.mark.requires("guests", "nic:sriov")
def test_dp04_rx_starvation_then_refill_resumes_traffic_with_balanced_buffers(
    lab: Lab, guest: str, cleanup: Cleanup
) -> None:
    """Steps: sequenced generator->guest traffic; the guest stops giving RX buffers back to
    the VF until the NIC counts frames with no buffer; then refills. Verify: the loss is one
    run of consecutive frames, every one of them counted by the NIC as "no buffer", and
    every frame after it arrived (traffic resumed); nothing duplicated or reordered; the
    guest's buffer accounting balances and the VF's ring is fully posted again; no errors."""
    gen = kit.generator(lab)
    vf = kit.status(lab, guest)["vf"]
    posted = kit.driver_status(lab, guest)["buffers"]["vf-rx"]
    errors = kit.driver_status(lab, guest)["errors"]
    no_buffer = vf_state(lab, guest, vf)["counters"]["rx_no_buffer"]
    cleanup.defer("rx-refill", lambda: driver_call(lab, guest, "rx-refill", on=True))

    def starve() -> None:
        driver_call(lab, guest, "rx-refill", on=False)
        try:
            wait_for(
                "the NIC counting frames with no RX buffer",
                lambda: vf_state(lab, guest, vf)["counters"]["rx_no_buffer"] > no_buffer,
            )
        finally:
            driver_call(lab, guest, "rx-refill", on=True)

    spec = TrafficSpec(source=gen, to=guest, pps=10_000, duration_s=1.5, flow=41)
    (result,), _ = kit.traffic_during(lab, [spec], starve, start_after_s=0.1)
    dropped = vf_state(lab, guest, vf)["counters"]["rx_no_buffer"] - no_buffer
    assert (result.duplicates, result.reordered, result.corrupt) == (0, 0, 0), kit.exact(result)
    assert result.lost > 0, "the ring never ran dry: nothing was lost"
    assert result.lost == dropped, (
        f"{result.lost} lost, but the NIC counted {dropped} frames without a buffer"
    )
    assert len(result.missing) == 1, f"the loss is not one run: {result.missing[:5]}"
    assert result.missing[0][1] < result.sent - 1, "nothing arrived after the refill"
    status = kit.status(lab, guest)
    assert (status["mode"], status["vf"]) == ("passthrough", vf), status["reason"]
    buffers = wait_for(
        "the VF's RX ring fully posted again",
        lambda: (b := kit.driver_status(lab, guest)["buffers"])["vf-rx"] == posted and b,
    )
    assert buffers["balanced"] == 1, f"buffer accounting does not balance: {buffers}"
    assert kit.driver_status(lab, guest)["errors"] == errors, "the plugin reported errors"


# -- DP-05 -------------------------------------------------------------------------------


def allowed_vlans(lab: Lab, guest: str) -> list[int]:
    """VLAN ids the guest's port policy allows, ascending."""
    ranges = lab.topology.guest(guest).policy.vlan_ranges()
    return [vid for vid in range(1, 4095) if any(lo <= vid <= hi for lo, hi in ranges)]


def joinable_vlan(lab: Lab, guest: str) -> int:
    allowed = allowed_vlans(lab, guest)
    if not allowed:
        pytest.skip(f"{guest}'s port policy allows untagged frames only")
    return 100 if 100 in allowed else allowed[0]


def blank_stamp(frame: bytes, payload_at: int) -> bytes:
    """``frame`` with the bytes the generator changes per frame (seq, time, check) zeroed."""
    start, end = payload_at + wire.SEQ_OFFSET, payload_at + wire.HEADER_LEN
    return frame[:start] + bytes(end - start) + frame[end:]


def captured(pcap: Path, flow: int) -> list[bytes]:
    """Every frame of ``flow`` in an Ethernet capture (802.1Q tags as on the wire), blanked."""
    frames = []
    for data, _ in RawPcapReader(str(pcap)):
        frame = bytes(data)
        at = 46 if frame[12:14] == b"\x81\x00" else 42  # IPv4 without options, UDP
        stamp = wire.read_stamp(frame, at)
        if stamp is not None and stamp.flow == flow:
            frames.append(blank_stamp(frame, at))
    return frames


@pytest.mark.catalogue("DP-05")
@pytest.mark.requires("guests", "nic:sriov")
@pytest.mark.parametrize("priority", [0, 5], ids=["pcp0", "pcp5"])
def test_dp05_vlan_tagged_frames_are_the_same_in_both_modes(
    lab: Lab, guest: str, cleanup: Cleanup, artifacts: Path, priority: int
) -> None:
    """Steps: the guest joins a VLAN; in passthrough, then in emulation, the generator sends
    it tagged frames (802.1Q priority ``priority``) and it sends tagged frames back, each
    side capturing. Verify: every frame arrives exactly once, in order, both ways; every
    captured frame is the frame that was sent, tag included (the VF strips the tag and the
    shell puts it back in passthrough; emulation leaves it in place)."""
    gen = kit.generator(lab)
    vid = joinable_vlan(lab, guest)
    filters(lab, guest, cleanup)("add_vlans", lo=vid, hi=vid)
    maker = FrameMaker(lab)
    inbound, outbound = (
        maker.probe(
            f"VLAN {vid} {src} -> {dst}", src, dst, 0, vlan=vid, priority=priority, count=100
        )
        for src, dst in ((gen, guest), (guest, gen))
    )
    # One capture on each side for the whole test; each mode's frames are flows of their own.
    probes = {
        mode: (inbound.as_flow(51 + 2 * i), outbound.as_flow(52 + 2 * i))
        for i, mode in enumerate(MODES)
    }
    at_guest, at_gen = artifacts / f"{guest}.pcap", artifacts / f"{gen}.pcap"
    wrong: list[str] = []
    with (
        capture(lab, guest, data_address(lab, guest)[0], at_guest),
        capture(lab, gen, data_address(lab, gen)[0], at_gen),
    ):
        for mode, (to_guest, from_guest) in probes.items():
            put_in(lab, guest, mode)
            seen = send_probes(lab, [to_guest, from_guest], [guest, gen])
            wrong += arrivals(seen, [(to_guest, guest, True), (from_guest, gen, True)], mode)
    assert not wrong, "\n".join(wrong)
    changed: list[tuple[str, Probe, bytes, bytes]] = []
    for mode, pair in probes.items():
        for probe, pcap in zip(pair, (at_guest, at_gen), strict=True):
            sent = blank_stamp(probe.template.frame, probe.template.payload_at)
            frames = captured(pcap, probe.flow)
            assert len(frames) == probe.count, f"{mode}: {len(frames)} of {probe.name} in {pcap}"
            changed += [(mode, probe, sent, f) for f in dict.fromkeys(frames) if f != sent]
    if not changed:
        return
    shown = "\n".join(
        f"{mode}: {probe.name}: sent {sent[12:18].hex()}..., captured {frame[12:18].hex()}..."
        " (type + tag)"
        for mode, probe, sent, frame in changed
    )
    pytest.fail(f"frames differ from what was sent (artifacts: {artifacts}):\n{shown}")


@pytest.mark.catalogue("DP-05")
@pytest.mark.requires("guests", "nic:sriov")
def test_dp05_checksum_and_tso_offload_parity(lab: Lab, guest: str) -> None:
    """Steps: look at the guest's netdev. Verify: checksum and TSO offload parity needs a
    guest that asks for them, which only a TAP with a virtio-net header can."""
    out = lab.host(guest).run(f"ip -d -j link show dev {data_address(lab, guest)[0]}", timeout=10)
    assert out.exit_status == 0, out.stderr
    info = json.loads(out.stdout)[0].get("linkinfo", {}).get("info_data", {})
    if not info.get("vnet_hdr"):
        pytest.skip(
            f"{guest}'s TAP has no virtio-net header (IFF_VNET_HDR off), so the guest never "
            "asks for checksum or TSO offload; parity of those needs IFF_VNET_HDR in the shell"
        )
    pytest.skip("the shell's TAP has IFF_VNET_HDR, but this check is not written yet")


# -- DP-06 -------------------------------------------------------------------------------


def negotiated(lab: Lab, guest: str) -> tuple[set[str], dict[str, Any]]:
    """(features the guest's driver uses, its VF as the NIC sees it), in passthrough."""
    status = kit.status(lab, guest)
    assert status["mode"] == "passthrough", status["reason"]
    return set(kit.driver_status(lab, guest)["features"]), vf_state(lab, guest, status["vf"])


@pytest.mark.catalogue("DP-06")
@pytest.mark.requires("guests", "nic:sriov")
def test_dp06_only_offered_features_are_enabled_and_no_capability_means_emulation(
    lab: Lab, guest: str, cleanup: Cleanup
) -> None:
    """Steps: read what the guest's driver uses and what its VF offers and has enabled; make
    the NIC's VFs offer one feature less, switch out and back; make them offer nothing,
    switch out and ask for passthrough; send traffic; restore the features. Verify: the
    driver uses, and the VF has enabled, only offered features (never the one withdrawn);
    with no capability the switch is refused, the guest stays in emulation with that reason
    and carries traffic exactly; with the features back it returns to passthrough."""
    used, vf = negotiated(lab, guest)
    offered = list(vf["offered"])
    assert used <= set(offered) and set(vf["enabled"]) == used, f"uses {used}, VF {vf}"
    assert used, f"the driver uses none of {offered}: nothing to withdraw"
    cleanup.defer("VF features", lambda: nic_call(lab, guest, "SET_VF_FEATURES", features=offered))
    withdrawn = sorted(used)[-1]
    nic_call(lab, guest, "SET_VF_FEATURES", features=[f for f in offered if f != withdrawn])
    put_in(lab, guest, "emulation")
    put_in(lab, guest, "passthrough")
    now, vf = negotiated(lab, guest)
    assert withdrawn not in now and withdrawn not in vf["enabled"], (
        f"{withdrawn} is no longer offered, yet the driver uses {now}, the VF has {vf['enabled']}"
    )
    assert now <= set(vf["offered"]) and set(vf["enabled"]) <= set(vf["offered"]), vf
    nic_call(lab, guest, "SET_VF_FEATURES", features=[])
    put_in(lab, guest, "emulation")
    with pytest.raises(ControlError) as refused:
        kit.switch(lab, guest, "passthrough")
    status = kit.wait_mode(lab, guest, "emulation")
    assert "no usable capability" in status["reason"], (refused.value, status["reason"])
    assert owned_vfs(lab, guest) == [], "the VF without capabilities must be released"
    both_exact(run_flows(lab, kit.both_ways(lab, guest, CHECK_PPS, CHECK_SECONDS)), "emulation")
    nic_call(lab, guest, "SET_VF_FEATURES", features=offered)
    put_in(lab, guest, "passthrough")
    assert negotiated(lab, guest)[0] == used


# -- DP-07 -------------------------------------------------------------------------------

#: The MTU DP-07 gives the guest's port (below the guest's netdev MTU, so it can exceed it).
SMALL_MTU = 1000


@pytest.mark.catalogue("DP-07")
@pytest.mark.requires("guests", "nic:sriov")
def test_dp07_filters_behave_the_same_in_both_modes_and_across_switches(
    lab: Lab, guest: str, cleanup: Cleanup
) -> None:
    """Steps: the guest joins two multicast groups and a VLAN; the generator sends it
    unicast, both kinds of multicast, broadcast, a joined and a not joined VLAN and unknown
    unicast, in passthrough, in emulation and in passthrough again. Then the guest joins
    33 groups (more than a VF's filter holds), goes promiscuous and lowers its port MTU;
    the same in both modes, plus frames from the guest at and above that MTU. Verify:
    exactly the same frames reach (all of them) or miss (none of them) the guest's netdev
    and the generator each time; the VF's port configuration is the vport's; frames above
    the MTU are counted as dropped on the port in use."""
    gen = kit.generator(lab)
    vid = joinable_vlan(lab, guest)
    others = [v for v in allowed_vlans(lab, guest) if v != vid]
    set_filter = filters(lab, guest, cleanup)
    set_filter("multicast", macs=list(JOINED_GROUPS))
    set_filter("add_vlans", lo=vid, hi=vid)
    maker = FrameMaker(lab)
    to_guest: list[tuple[Probe, bool]] = [
        (maker.probe("unicast to the guest", gen, guest, 61), True),
        (maker.probe("joined group", gen, guest, 62, dst_mac=JOINED_GROUPS[0]), True),
        (maker.probe("group not joined", gen, guest, 63, dst_mac=OTHER_GROUP), False),
        (maker.probe("broadcast", gen, guest, 64, dst_mac=BROADCAST), True),
        (maker.probe(f"joined VLAN {vid}", gen, guest, 65, vlan=vid), True),
        (maker.probe("unknown unicast", gen, guest, 67, dst_mac=UNKNOWN_UNICAST), False),
    ]
    if others:
        to_guest.append((maker.probe(f"VLAN {others[0]}", gen, guest, 66, vlan=others[0]), False))
    wrong: list[str] = []

    def same_config(status: dict[str, Any], when: str) -> None:
        if status["mode"] == "passthrough":
            vport, vf = port_config(lab, guest), port_config(lab, guest, port_of(status))
            if vport != vf:
                wrong.append(f"{when}: VF port {vf} differs from the vport {vport}")

    for when in ("passthrough", "emulation", "passthrough"):
        status = put_in(lab, guest, when)
        same_config(status, when)
        seen = send_probes(lab, [p for p, _ in to_guest], [guest])
        wrong += arrivals(seen, [(p, guest, want) for p, want in to_guest], when)
    many = [*JOINED_GROUPS, *(f"01:00:5e:4e:51:{i:02x}" for i in range(31))]
    set_filter("multicast", macs=many)
    set_filter("rx_mode", promisc=True, allmulti=False)
    set_filter("mtu", mtu=SMALL_MTU)
    fits = maker.probe(f"{SMALL_MTU}-byte payload", guest, gen, 68, size=SMALL_MTU + 14)
    too_big = maker.probe(f"{SMALL_MTU + 1}-byte payload", guest, gen, 69, size=SMALL_MTU + 15)
    expected = [(p, guest, True) for p, _ in to_guest if p.flow in (63, 67)]
    expected += [(fits, gen, True), (too_big, gen, False)]
    for when in MODES:
        status = put_in(lab, guest, when)
        same_config(status, f"{len(many)} groups, {when}")
        config = port_config(lab, guest, port_of(status))
        if (config["allmulti"], config["promisc"], config["mtu"]) != (True, True, SMALL_MTU):
            wrong.append(f"{len(many)} groups, {when}: port {port_of(status)} is {config}")
        before = nic_call(lab, guest, "PORT_COUNTERS", port=port_of(status))
        seen = send_probes(lab, [p for p, _, _ in expected], [guest, gen])
        wrong += arrivals(seen, expected, f"{len(many)} groups, promiscuous, {when}")
        after = nic_call(lab, guest, "PORT_COUNTERS", port=port_of(status))
        if after["drop_mtu"] - before["drop_mtu"] != too_big.count:
            wrong.append(f"{when}: {after['drop_mtu'] - before['drop_mtu']} MTU drops counted")
    assert not wrong, "\n".join(wrong)


# -- DP-08 -------------------------------------------------------------------------------


@pytest.mark.catalogue("DP-08")
@pytest.mark.requires("guests", "nic:sriov")
def test_dp08_requests_the_port_policy_forbids_are_refused_in_both_modes(
    lab: Lab, guest: str, cleanup: Cleanup
) -> None:
    """Steps: in passthrough, then in emulation, the guest's driver asks for what its port
    policy forbids: another MAC, a VLAN and a port VLAN outside the allowed ranges. Verify:
    each is refused with EPERM and a message naming the port and the policy; the guest's
    port configuration (and its VF's) is unchanged."""
    policy = lab.topology.guest(guest).policy
    allowed = set(allowed_vlans(lab, guest))
    outside = next((vid for vid in range(1, 4095) if vid not in allowed), None)
    requests: list[tuple[dict[str, Any], str]] = []
    if not policy.mac_change:
        requests.append(({"set": "mac", "mac": FORGED_MAC}, "policy forbids MAC changes"))
    if outside is not None:
        requests.append(({"set": "add_vlans", "lo": outside, "hi": outside}, "policy allows VLANs"))
        requests.append(({"set": "default_vlan", "vlan": outside}, "policy allows VLANs"))
    if not requests:
        pytest.skip(f"{guest}'s port policy allows MAC changes and every VLAN")
    filters(lab, guest, cleanup)  # should a request pass, the filters are put back
    wrong = []
    for mode in MODES:
        status = put_in(lab, guest, mode)
        ports = [f"vport:{guest}"] + ([port_of(status)] if mode == "passthrough" else [])
        before = {port: port_config(lab, guest, port) for port in ports}
        for request, reason in requests:
            try:
                device_call(lab, guest, "filter", **request)
            except ControlError as err:
                text = str(err)
                if err.code != "EPERM" or f"port vport:{guest}" not in text or reason not in text:
                    wrong.append(f"{mode}: {request} refused as {err.code} {text!r}")
            else:
                wrong.append(f"{mode}: {request} was accepted")
        after = {port: port_config(lab, guest, port) for port in ports}
        if after != before:
            wrong.append(f"{mode}: the ports changed: {before} -> {after}")
    assert not wrong, "\n".join(wrong)


# -- DP-09 -------------------------------------------------------------------------------


@pytest.mark.catalogue("DP-09")
@pytest.mark.requires("guests:2", "nic:sriov")
def test_dp09_forged_source_macs_are_dropped_counted_and_seen_by_no_one(
    lab: Lab, guest: str, neighbour: str, cleanup: Cleanup
) -> None:
    """Steps: in passthrough, then in emulation, the guest sends frames with a forged source
    MAC, to the generator and to broadcast, and the same frames with its own MAC; the
    generator and a neighbour guest on the same NIC listen. Verify: no forged frame reaches
    either; the guest's switch port in use counts every one as spoofed; the frames with the
    guest's own MAC all arrive."""
    if not lab.topology.guest(guest).policy.antispoof:
        pytest.skip(f"{guest}'s port policy does not require anti-spoofing")
    gen = kit.generator(lab)
    maker = FrameMaker(lab)
    forged = maker.probe("forged source to the generator", guest, gen, 71, src_mac=FORGED_MAC)
    forged_bc = maker.probe(
        "forged source, broadcast", guest, gen, 72, src_mac=FORGED_MAC, dst_mac=BROADCAST
    )
    real = maker.probe("own source to the generator", guest, gen, 73)
    real_bc = maker.probe("own source, broadcast", guest, gen, 74, dst_mac=BROADCAST)
    expected = [
        (forged, gen, False),
        (forged_bc, gen, False),
        (forged_bc, neighbour, False),
        (real, gen, True),
        (real_bc, gen, True),
        (real_bc, neighbour, True),
    ]
    wrong = []
    for mode in MODES:
        status = put_in(lab, guest, mode)
        port = port_of(status)
        before = nic_call(lab, guest, "PORT_COUNTERS", port=port)
        seen = send_probes(lab, [forged, forged_bc, real, real_bc], [gen, neighbour])
        after = nic_call(lab, guest, "PORT_COUNTERS", port=port)
        wrong += arrivals(seen, expected, mode)
        spoofed = after["drop_spoofed"] - before["drop_spoofed"]
        if spoofed != forged.count + forged_bc.count:
            wrong.append(f"{mode}: port {port} counted {spoofed} spoofed frames")
    assert kit.status(lab, neighbour)["mode"] == "passthrough"
    assert not wrong, "\n".join(wrong)


# -- DP-10 -------------------------------------------------------------------------------

#: DP-10: round trips passthrough -> emulation -> passthrough under traffic.
ROUND_TRIPS = 2
COUNTER_KEYS = ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes")


def settled_host_counters(
    lab: Lab, guest: str, vfs: Sequence[int], through_vfs: Counter[str]
) -> tuple[Counter[str], dict[str, int], dict[str, int]]:
    """(VF counters accumulated into ``through_vfs``, emulation counters, guest counters),
    read when nothing moved while the guest's were read (a stray frame would skew them)."""
    deadline = time.monotonic() + 5.0
    while True:
        for vf in vfs:
            through_vfs.update(queue_stats(lab, guest, vf))
        emulation = kit.status(lab, guest)["emulation"]
        seen = counters(lab, guest)
        moved: Counter[str] = Counter()
        for vf in vfs:
            moved.update(queue_stats(lab, guest, vf))
        through_vfs.update(moved)
        quiet = not any(moved.values()) and kit.status(lab, guest)["emulation"] == emulation
        if quiet or time.monotonic() > deadline:
            return through_vfs, emulation, seen


@pytest.mark.catalogue("DP-10")
@pytest.mark.requires("guests", "nic:sriov")
def test_dp10_guest_counters_are_monotonic_and_add_up_across_switches(
    lab: Lab, guest: str, cleanup: Cleanup
) -> None:
    """Steps: sequenced traffic both ways; meanwhile the guest goes to emulation and back
    several times, its counters sampled around every switch; the VFs' queue statistics
    (deltas) are accumulated from the start, the device's emulation counters read before
    and after. Verify: traffic is within the lab's loss and blackout limits; every guest
    counter only grows; what the guest counted equals what went through the VFs plus
    through emulation, per path and in total, packets and bytes."""
    limits = lab.topology.limits
    usable = [
        v["vf"]
        for v in nic_call(lab, guest, "STATUS")["vfs"]
        if v["owner"] in (guest, None) and v["state"] != "absent"
    ]
    through_vfs, emu_before, guest_before = settled_host_counters(lab, guest, usable, Counter())
    through_vfs.clear()
    samples = [guest_before]
    activations = 0

    def switches() -> None:
        nonlocal activations
        for _ in range(ROUND_TRIPS):
            for mode in ("emulation", "passthrough"):
                done = kit.switch(lab, guest, mode)
                activations += "VF_ACTIVATE" in done["steps"]
                samples.extend(counters(lab, guest) for _ in range(5))

    results, _ = kit.traffic_during(
        lab, kit.both_ways(lab, guest, 3000, 2.0), switches, start_after_s=0.3
    )
    for result in results:
        assert (result.duplicates, result.reordered, result.corrupt) == (0, 0, 0), kit.exact(result)
        assert result.lost <= limits.loss_packets, kit.exact(result)
        assert result.longest_gap_ms <= limits.blackout_ms, kit.exact(result)
    through_vfs, emu_after, guest_after = settled_host_counters(lab, guest, usable, through_vfs)
    samples.append(guest_after)
    owners = {v["owner"] for v in nic_call(lab, guest, "STATUS")["vfs"] if v["vf"] in usable}
    assert owners <= {guest, None}, f"another guest used VFs {usable}: {owners}"
    backwards = [
        f"{key}: {a[key]} -> {b[key]}" for a, b in pairwise(samples) for key in a if b[key] < a[key]
    ]
    assert not backwards, f"guest counters went backwards: {backwards[:5]}"
    guest_delta = {k: guest_after[k] - guest_before[k] for k in guest_after}
    emulated = {k: emu_after[k] - emu_before[k] for k in COUNTER_KEYS}
    paths = {
        "vf_tx_packets": (guest_delta["vf_tx_packets"], through_vfs["tx_packets"]),
        "emu_tx_packets": (guest_delta["emu_tx_packets"], emulated["tx_packets"]),
        "vf_rx_packets": (guest_delta["vf_rx_packets"], through_vfs["rx_packets"]),
        "tx_packets": (
            guest_delta["tx_packets"],
            through_vfs["tx_packets"] + emulated["tx_packets"],
        ),
        "tx_bytes": (guest_delta["tx_bytes"], through_vfs["tx_bytes"] + emulated["tx_bytes"]),
        "rx_bytes": (guest_delta["rx_bytes"], through_vfs["rx_bytes"] + emulated["rx_bytes"]),
    }
    unequal = {k: v for k, v in paths.items() if v[0] != v[1]}
    assert not unequal, f"guest != host (VFs + emulation): {unequal}"
    assert guest_delta["emu_rx_packets"] > 0 and guest_delta["vf_rx_packets"] > 0, guest_delta
    guest_rx = guest_delta["rx_packets"] + guest_delta["rx_dropped"]
    surplus = through_vfs["rx_packets"] + emulated["rx_packets"] - guest_rx
    assert surplus == 0, f"host counted {surplus} more received packets than the guest"


# -- DP-11 -------------------------------------------------------------------------------

#: The device's quarantine code for each fault, per vendor (None: the shell's TX watchdog
#: detects it, the device sees nothing wrong).
FAULT_CODES: dict[str, dict[str, str | None]] = {
    "alpha": {"bad-buffer": "bad-address", "outside-ring": "bad-index", "no-complete": None},
    "beta": {"bad-buffer": "bad-buffer-id", "outside-ring": "bad-index", "no-complete": None},
    "gamma": {"bad-buffer": "bad-address", "outside-ring": "bad-index", "no-complete": None},
}


def pings(lab: Lab, source: str, to: str, count: int) -> int:
    """Echo replies ``source`` got of ``count`` pings to ``to``'s data address."""
    address = shlex.quote(data_address(lab, to)[1])
    out = lab.host(source).run(f"ping -n -q -c {count} -i 0.05 -W 1 {address}", timeout=30)
    for line in out.stdout.splitlines():
        if " received" in line:
            return int(line.split(" received")[0].rsplit(" ", 1)[-1])
    raise AssertionError(f"ping from {source} printed no summary: {out.stdout} {out.stderr}")


@pytest.mark.catalogue("DP-11")
@pytest.mark.requires("guests:2", "nic:sriov")
@pytest.mark.parametrize("fault", ["bad-buffer", "outside-ring", "no-complete"])
def test_dp11_a_misbehaving_plugin_is_contained(
    lab: Lab, guest: str, neighbour: str, cleanup: Cleanup, fault: str
) -> None:
    """Steps: sequenced traffic between the generator and a neighbour guest on the same NIC;
    meanwhile the guest's plugin starts misbehaving (``fault``) and the guest pings the
    generator. Verify: the fault is detected (the NIC quarantines the VF with the matching
    fault code, or the shell's TX watchdog fires), the VF is released, the guest falls back
    to emulation with a runtime-error reason and stays reachable, its buffers balance; the
    neighbour's traffic is exact and it keeps its VF in passthrough."""
    gen = kit.generator(lab)
    vf = kit.status(lab, guest)["vf"]
    neighbour_vf = kit.status(lab, neighbour)["vf"]
    vendor = nic_model(lab, guest).vendor
    if vendor not in FAULT_CODES:
        pytest.skip(f"which fault codes a {vendor} VF reports is not known to this test")
    code = FAULT_CODES[vendor][fault]
    cleanup.defer("plugin fault", lambda: driver_call(lab, guest, "plugin-fault", fault=None))

    def break_plugin() -> tuple[int, dict[str, Any]]:
        driver_call(lab, guest, "plugin-fault", fault=fault)
        replied = pings(lab, guest, gen, 20)  # its frames meet the broken plugin
        return replied, kit.wait_mode(lab, guest, "emulation")

    results, (replied, status) = kit.traffic_during(
        lab, kit.both_ways(lab, neighbour, 4000, 2.0), break_plugin, start_after_s=0.3
    )
    both_exact(results, f"{neighbour} while {guest}'s plugin broke ({fault})")
    assert kit.status(lab, neighbour)["vf"] == neighbour_vf, f"{neighbour} lost its VF"
    assert status["reason"].startswith("runtime error"), status["reason"]
    released = vf_state(lab, guest, vf)
    assert (released["state"], released["owner"]) == ("free", None), released
    if code is None:
        assert "TX timeout" in status["reason"], status["reason"]
    else:
        found = (released.get("fault") or {}).get("code")
        assert found == code, f"the NIC must quarantine VF {vf} for {code}: {released}"
    assert replied > 0, f"{guest} got no reply to 20 pings through the fault"
    assert pings(lab, guest, gen, 5) == 5, f"{guest} is not reachable in emulation"
    driver = kit.driver_status(lab, guest)
    assert driver["errors"] and driver["buffers"]["balanced"] == 1, driver
