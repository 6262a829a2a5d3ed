"""Conformance DP-02, DP-03, DP-04 and DP-10: traffic through the VF, measured.

DP-02: passthrough carries sequenced traffic both ways exactly, all of it through the
VF. DP-03: a full TX ring makes the shell requeue without loss. DP-04: RX starvation,
then refill: one counted run of losses, balanced buffers. DP-10: the guest's counters
are monotonic and add up (VFs plus emulation) across switches. Thresholds come from the
topology's ``limits:``; the rates and frame counts below are test parameters, not pass
criteria. Helpers: ``data_path_kit``, ``data_path_probes``; fixtures: ``conftest.py``.
"""

from __future__ import annotations

import shlex
import time
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise

import pytest

from bench.lab import Lab
from bench.traffic.engine import (
    TrafficSpec,
    agent_command,
    install_agent,
    last_json,
    run_flows,
    running,
    wait_ready,
)
from tests.conformance import kit
from tests.conformance.data_path_kit import (
    Cleanup,
    both_exact,
    counters,
    driver_call,
    nic_call,
    nic_model,
    queue_stats,
    vf_state,
    wait_for,
)
from tests.conformance.data_path_probes import FrameMaker, data_address

#: DP-02's configured rate and duration (both ways at once).
RATE_PPS = 5000
RATE_SECONDS = 2.0


#: DP-03: a burst beyond the TX ring (4095 descriptors on alpha) by less than the guest's
#: TAP queue holds (1000: what waits there while the ring is full must not overflow it),
#: paced so that the ring fills well within the shell's TX watchdog (200 ms) yet no faster
#: than the shell reads its TAP. The frames that leave before the pause takes effect
#: (~35 a millisecond) come out of the margin.
BURST_FRAMES = 5000
BURST_PPS = 35_000


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
    # the plugin posts a budget a call: a ring attached just now may still be filling
    posted = wait_for(
        "the VF's RX ring fully posted",
        lambda: not (d := kit.driver_status(lab, guest))["vf_rx_refilling"] and d,
    )["buffers"]["vf-rx"]
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
