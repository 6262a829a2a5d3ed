"""The NPA data path on real parts: NIC emulator, vmxnet3 device and shell processes,
a veth to a generator namespace, the guest's TAP in its own namespace.

Each test measures with the traffic agent (sequenced, stamped frames) and reads
the devices' own state over their control sockets. The conformance suite runs
the same processes through ``npabench up``; these tests pin the data path's
behaviour down where it is cheapest to look.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nic_emulators.config import lab_shm_files, nic_run_dir
from nic_emulators.shm import SharedRegion
from nic_emulators.vendors import alpha_layout, beta_layout
from nic_emulators.vendors import window as w
from nic_emulators.vendors.window import RegisterWindow
from tests.labkit import REPO
from tests.nic.rig import Rig, one_way
from tests.traffic.netns import can_run

pytestmark = pytest.mark.skipif(can_run() is not None, reason=str(can_run()))

MODELS = ("alpha-10g", "beta-25g")


@pytest.fixture
def make_rig() -> Iterator[Any]:
    made: list[Rig] = []

    def make(**kwargs: Any) -> Rig:
        rig = Rig(**kwargs)
        made.append(rig)
        rig.up()
        return rig

    yield make
    for rig in made:
        rig.close()
        assert not lab_shm_files(rig.lab), f"shared memory left behind: {lab_shm_files(rig.lab)}"


def flow(result: dict[str, Any]) -> dict[str, Any]:
    (stats,) = result["flows"].values()
    stats["sent"] = result["sender"]["sent"]
    return stats


def assert_exact(stats: dict[str, Any], what: str, rig: Rig | None = None, guest: int = 1) -> None:
    """Every frame once, in order; on a failure with ``rig``, the message carries the data
    path's own account of guest ``guest`` (a rare loss must name where it happened)."""
    seen = (stats["received"], stats["duplicates"], stats["reordered"], stats["corrupt"])
    if seen == (stats["sent"], 0, 0, 0):
        return
    account = f"\n{data_path_account(rig, guest)}" if rig is not None else ""
    raise AssertionError(
        f"{what}: sent {stats['sent']}, got {stats['received']} ({stats['duplicates']} dup, "
        f"{stats['reordered']} reordered, {stats['corrupt']} corrupt); "
        f"missing {stats['missing'][:5]}{account}"
    )


def data_path_account(rig: Rig, n: int) -> str:
    """What the shell, the vmxnet3 device and the NIC of guest ``n`` say about it now."""
    lines = []
    for part, ask in (
        ("shell", lambda: shell_status(rig, n)),
        ("device", lambda: rig.status(n)),
        ("nic", lambda: nic_account(rig, f"vm{n}")),
    ):
        try:
            lines.append(f"{part}: {json.dumps(ask(), sort_keys=True)}")
        except Exception as err:  # a process that is gone says so
            lines.append(f"{part}: not answering ({type(err).__name__}: {err})")
    return "\n".join(lines)


@contextlib.contextmanager
def rogue_window(rig: Rig, vf: int) -> Iterator[RegisterWindow]:
    """VF ``vf``'s registers and rings, mapped as its driver maps them: the test writes
    them as a driver that breaks the contract would."""
    with rig.nic() as nic:
        region = SharedRegion.open(nic.call("VF_GET_INFO", vf=vf)["region"])
    window = RegisterWindow(region.view, kick=lambda: None)
    try:
        yield window
    finally:
        window.release()
        region.close()


def nic_account(rig: Rig, owner: str) -> dict[str, Any]:
    with rig.nic() as nic:
        status = nic.call("STATUS")
    return {
        "drops": status["drops"],
        "vfs": [vf for vf in status["vfs"] if vf["owner"] == owner or vf.get("fault")],
    }


def netdev(rig: Rig, n: int = 1) -> dict[str, Any]:
    out = subprocess.run(
        ["ip", "-n", rig.ns(f"g{n}"), "-j", "addr", "show", "dev", "eth0"],
        capture_output=True,
        text=True,
        check=True,
    )
    (link,) = json.loads(out.stdout)
    return {
        "ifindex": link["ifindex"],
        "mac": link["address"],
        "ip": sorted(a["local"] for a in link["addr_info"] if a["family"] == "inet"),
    }


def shell_status(rig: Rig, n: int = 1) -> dict[str, Any]:
    with rig.shell(n) as shell:
        return shell.call("status")


def under_traffic(
    rig: Rig, seconds: float, pps: int, guest: int = 1
) -> tuple[list[threading.Thread], dict[str, Any]]:
    """Start paced traffic generator->guest and guest->generator; join the threads for results."""
    results: dict[str, Any] = {}

    def run(src: str, dst: str, flow_id: int) -> None:
        results[f"{src}->{dst}"] = one_way(rig, src, dst, seconds=seconds, pps=pps, flow=flow_id)

    threads = [
        threading.Thread(target=run, args=a) for a in (("t", f"g{guest}", 1), (f"g{guest}", "t", 2))
    ]
    for thread in threads:
        thread.start()
    return threads, results


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} not within {timeout} s")


@pytest.mark.parametrize("model", MODELS)
def test_passthrough_carries_sequenced_traffic_both_ways_exactly(make_rig: Any, model: str) -> None:
    rig = make_rig(model=model)
    status = rig.wait_mode("passthrough")
    assert status["plugin"] == model.split("-", maxsplit=1)[0]
    for src, dst in (("t", "g1"), ("g1", "t")):
        assert_exact(
            flow(one_way(rig, src, dst, seconds=1.0, pps=5000)), f"{model} {src}->{dst}", rig
        )
    counters = shell_status(rig)["counters"]
    assert counters["emu_rx_packets"] == 0 and counters["emu_tx_packets"] == 0, counters
    with rig.nic() as nic:
        queues = nic.call("GET_QUEUE_STATS", vf=status["vf"])["queues"]
        again = nic.call("GET_QUEUE_STATS", vf=status["vf"])["queues"]
    assert (
        sum(q["rx_packets"] for q in queues) >= 5000
        and sum(q["tx_packets"] for q in queues) >= 5000
    )
    assert all(q["rx_packets"] == 0 for q in again), (
        "GET_QUEUE_STATS must report deltas since the last read"
    )


def test_a_stalled_shell_loses_nothing_the_guest_sent_meanwhile(make_rig: Any) -> None:
    """Steps: stop the shell's process (SIGSTOP, as a host that does not run it for a
    while); the guest sends a 5000-frame burst; continue the shell once the burst is out.
    Verify: every frame arrives, all of them after the burst was sent (they waited in
    the guest's TAP, whose queue the shell sized), and the TAP dropped none."""
    rig = make_rig()
    rig.wait_mode("passthrough")
    shell = rig.procs["shell vm1"].popen.pid
    os.kill(shell, signal.SIGSTOP)
    try:
        result = one_way(
            rig,
            "g1",
            "t",
            seconds=0.1,
            pps=50_000,
            after_send=lambda: os.kill(shell, signal.SIGCONT),
        )
    finally:
        os.kill(shell, signal.SIGCONT)
    stats = flow(result)
    assert_exact(stats, "a 5000-frame burst sent while the shell was stopped", rig)
    assert stats["first_rx_ns"] > result["sender"]["last_tx_ns"], (
        "frames arrived while the shell was stopped: the stall was not one"
    )
    dropped = subprocess.run(
        ["ip", "-n", rig.ns("g1"), "-j", "-s", "link", "show", "dev", "eth0"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert json.loads(dropped)[0]["stats64"]["tx"]["dropped"] == 0, dropped


@pytest.mark.parametrize("model", MODELS)
def test_planned_switches_under_traffic_lose_nothing_and_keep_the_netdev(
    make_rig: Any, model: str
) -> None:
    rig = make_rig(model=model)
    rig.wait_mode("passthrough")
    before = netdev(rig)
    threads, results = under_traffic(rig, seconds=2.5, pps=8000)
    time.sleep(0.5)
    took = []
    with rig.vmx() as vmx:
        for _ in range(3):
            took.append(vmx.call("switch", to="emulation")["took_ms"])
            time.sleep(0.15)
            took.append(vmx.call("switch", to="passthrough")["took_ms"])
            time.sleep(0.15)
    for thread in threads:
        thread.join()
    for name, result in results.items():
        assert_exact(flow(result), f"{model} {name} across 6 switches", rig)
    assert netdev(rig) == before, "the guest's netdev, MAC or IP changed"
    status = shell_status(rig)
    assert status["buffers"]["balanced"] == 1 and status["buffers"]["vf-tx"] == 0, status["buffers"]
    assert status["counters"]["emu_rx_packets"] > 0 and status["counters"]["vf_rx_packets"] > 0
    # Each switch to passthrough held the VF's TX for the guest's TX fence, and every fence
    # the device passed on came (none was given up at the NIC's deadline).
    with rig.nic() as nic:
        fences = nic.call("STATUS")["tx_fences"]
    assert fences["waiting"] == 0 and fences["timed_out"] == 0, fences
    assert fences["passed"] >= 3, fences
    assert rig.status()["emulation"]["tx_fences"] == fences["passed"], fences


def test_surprise_removal_keeps_the_guest_reachable_and_the_vf_comes_back(make_rig: Any) -> None:
    rig = make_rig(model="alpha-10g")
    vf = rig.wait_mode("passthrough")["vf"]
    threads, results = under_traffic(rig, seconds=2.0, pps=5000)
    time.sleep(0.5)
    with rig.nic() as nic:
        nic.call("VF_REMOVE", vf=vf)
    status = rig.wait_mode("emulation")
    assert status["reason"].startswith("VF removed"), status
    for thread in threads:
        thread.join()
    for name, result in results.items():
        stats = flow(result)
        lost = stats["sent"] - stats["received"]
        assert lost <= 50, (
            f"{name}: {lost} lost around a surprise removal (bound 50 = 10 ms at 5 kpps)"
        )
        assert stats["duplicates"] == 0
    assert_exact(
        flow(one_way(rig, "t", "g1", seconds=0.5, pps=2000)), "in emulation after the removal", rig
    )
    with rig.nic() as nic:
        nic.call("VF_RESTORE", vf=vf)
    rig.wait_mode("passthrough")
    assert_exact(flow(one_way(rig, "g1", "t", seconds=0.5, pps=2000)), "back in passthrough", rig)


@pytest.mark.parametrize(
    ("model", "fault", "code"),
    [
        ("beta-25g", "bad-buffer", "bad-buffer-id"),
        ("alpha-10g", "bad-buffer", "bad-address"),
        ("alpha-10g", "outside-ring", "bad-index"),
        ("beta-25g", "no-complete", None),
    ],
)
def test_misbehaving_plugin_is_quarantined_without_touching_the_other_guest(
    make_rig: Any, model: str, fault: str, code: str | None
) -> None:
    rig = make_rig(model=model, guests=2)
    vf1 = rig.wait_mode("passthrough", 1)["vf"]
    vf2 = rig.wait_mode("passthrough", 2)["vf"]
    threads, results = under_traffic(rig, seconds=2.0, pps=4000, guest=2)
    with rig.shell(1) as shell:
        shell.call("plugin-fault", fault=fault)
    pinger = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            rig.ns("g1"),
            "ping",
            "-c",
            "20",
            "-i",
            "0.05",
            "-W",
            "1",
            "198.19.77.2",
        ],
        capture_output=True,
        text=True,
    )
    status = rig.wait_mode("emulation", 1)
    assert status["reason"].startswith("runtime error"), status
    with rig.nic() as nic:
        vfs = nic.call("STATUS")["vfs"]
    (first,) = [v for v in vfs if v["vf"] == vf1]
    assert first["state"] == "free", f"the VF must be released after the fault: {first}"
    if code is None:
        assert "TX timeout" in status["reason"], status
    else:
        assert first.get("fault", {}).get("code") == code, (
            f"the device must quarantine for {code}: {first}"
        )
    for thread in threads:
        thread.join()
    for name, result in results.items():
        assert_exact(flow(result), f"guest 2 ({name}) while guest 1's plugin broke", rig, 2)
    assert rig.status(2)["mode"] == "passthrough" and rig.status(2)["vf"] == vf2
    replies = int(pinger.stdout.split(" received")[0].rsplit(" ", 1)[-1])
    assert replies >= 10, f"guest 1 must stay reachable through the fault:\n{pinger.stdout}"
    assert_exact(flow(one_way(rig, "t", "g1", seconds=0.5, pps=2000)), "guest 1 in emulation", rig)
    assert shell_status(rig, 1)["buffers"]["balanced"] == 1


def test_fpga_nic_is_driven_over_csr_and_its_guest_survives_a_power_cycle(make_rig: Any) -> None:
    rig = make_rig(model="fpga-nic")
    assert rig.wait_mode("passthrough")["plugin"] == "gamma"
    port = int((nic_run_dir(rig.state, "h", "nic0") / "csr.port").read_text())
    read = (
        "from drivers.csr_client import CsrClient; c = CsrClient('127.0.0.1', {port}); "
        "print(c.read(0x0), c.read(0x10), c.read(0x24))"
    )

    def csr() -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "exec", rig.ns("h"), sys.executable, "-c", read.format(port=port)],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert out.returncode == 0, out.stderr
        return [int(x) for x in out.stdout.split()]

    assert csr() == [0x4E504147, 0b11, 2], "ID, STATUS (powered, link up), VF_COUNT"
    regions = [p for p in lab_shm_files(rig.lab) if "-vf" in p.name]
    assert len(regions) == 2
    with rig.nic() as nic:
        nic.call("POWER", on=False)
    status = rig.wait_mode("emulation")
    assert status["reason"] == "VF removed: NIC powered off", status
    assert not [p for p in lab_shm_files(rig.lab) if "-vf" in p.name], "the VFs must vanish"
    with rig.nic() as nic:
        nic.call("POWER", on=True)
    rig.wait_mode("passthrough")
    assert csr() == [0x4E504147, 0b11, 2], (
        "the board answers at the same CSR address after power-on"
    )
    assert_exact(flow(one_way(rig, "t", "g1", seconds=0.5, pps=2000)), "back in passthrough", rig)


@pytest.mark.parametrize(
    ("model", "misdeed"),
    [("beta-25g", "no completion room"), ("alpha-10g", "part of a frame")],
)
def test_a_driver_that_stops_its_tx_ring_stalls_only_that_ring(
    make_rig: Any, model: str, misdeed: str
) -> None:
    """A driver posts a frame the device cannot finish — beta: it never gave back
    completion space; alpha: the tail ends inside a frame, before its EOP descriptor. The
    device must wait on that ring as hardware does: not spin on it (the NIC's CPU stays
    idle), and VF_QUIESCE must still answer (it finishes what it can, then stops)."""
    rig = make_rig(model=model)
    vf = rig.wait_mode("passthrough")["vf"]
    ns = rig.ns("g1")
    subprocess.run(  # a quiet guest: nothing of its own reaches the ring meanwhile
        ["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
        check=True,
    )
    with rig.shell() as shell:
        shell.call("plugin-fault", fault="no-complete")  # the shell lets go of the ring
    with rogue_window(rig, vf) as window:
        regs, rings = window.regs, window.rings
        size = regs[w.RING_SIZE]
        head = regs[w.qreg(0, w.TX_HEAD)]
        if model.startswith("beta"):
            slot = beta_layout.tx_wq_offset(0, size) + (head % size) * beta_layout.TX_WQE.size
            beta_layout.TX_WQE.pack_into(rings, slot, 0, 64, 0, 0, head)
            regs[w.qreg(0, w.TX_CQ_CI)] = (head - size) & 0xFFFFFFFF  # the CQ is full
        else:
            slot = alpha_layout.tx_ring_offset(0, size) + (head % size) * 16
            alpha_layout.TX_DESC.pack_into(rings, slot, 0x10000, 64, 0, 0, 0, 0)  # no EOP
        regs[w.qreg(0, w.TX_TAIL)] = (head + 1) & 0xFFFFFFFF
        with rig.nic() as nic:
            nic.call("STATUS")  # the NIC is past its wait (its next pass sees the ring)
        before = rig.cpu_by_process()["nic"]
        time.sleep(1.0)  # a measuring window, not a wait for a condition
        spent = rig.cpu_by_process()["nic"] - before
        assert spent < 0.3, (
            f"the NIC spun on a ring it cannot serve ({misdeed}): {spent:.2f} s CPU in 1 s"
        )
        with rig.nic() as nic:
            nic.timeout = 5.0
            quiesced = nic.call("VF_QUIESCE", vf=vf)
            (state,) = [v["state"] for v in nic.call("STATUS")["vfs"] if v["vf"] == vf]
        assert state == "quiesced", state
        assert quiesced["left"] == 1, f"VF_QUIESCE must say what it could not send: {quiesced}"
        assert regs[w.qreg(0, w.TX_HEAD)] == head, "the device took a frame it could not finish"


def test_frames_the_device_could_not_take_go_out_over_emulation(make_rig: Any) -> None:
    """The guest sends while its beta VF can complete nothing (the driver stopped returning
    completion space): the shell's TX watchdog falls back, VF_QUIESCE says how many posted
    frames the device did not take, and the shell sends exactly those over emulation —
    every frame arrives once, in order; none is counted as sent that never went out."""
    rig = make_rig(model="beta-25g")
    vf = rig.wait_mode("passthrough")["vf"]
    with rig.shell() as shell:
        shell.call("plugin-fault", fault="no-complete")  # completion space stays where it is
    with rogue_window(rig, vf) as window:  # and leaves the device none: what is posted
        regs = window.regs  # from now on stays posted
        regs[w.qreg(0, w.TX_CQ_CI)] = (regs[w.qreg(0, w.TX_HEAD)] - regs[w.RING_SIZE]) & 0xFFFFFFFF
    result = one_way(rig, "g1", "t", seconds=1.0, pps=2000)
    assert_exact(flow(result), "guest->generator across the fallback", rig)
    status = rig.wait_mode("emulation")
    assert status["reason"].startswith("runtime error: TX timeout"), status
    counters = shell_status(rig)["counters"]
    assert counters["vf_tx_packets"] == 0 and counters["tx_dropped"] == 0, counters
    assert counters["emu_tx_packets"] >= 2000, counters
