"""Foundation benchmarks: SSH round trips, fan-out to 16 hosts, lab up/down.

Targets (issue "Foundation"): persistent-channel round trip under 2 ms median;
16-host fan-out within 3x of one host (see ``_fanout`` for what that means on
a machine whose few cores run all 16 emulated hosts).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.lab import Lab, bring_up_topology
from bench.lab.teardown import tear_down
from bench.ssh import SshHost, run_on_all
from bench.topology import load_topology
from tests.benchmarks.figures import Comparison, median_ms
from tests.labkit import write_topology

ROUND_TRIPS = 300
EXEC_CHANNELS = 30
FANOUTS = 40
#: Time a host spends on the fan-out benchmark's command (like reading NIC state).
HOST_WORK_S = 0.01


def _up(path: Path) -> tuple[Lab, float]:
    started = time.perf_counter()
    lab = bring_up_topology(load_topology(path), path)
    return lab, time.perf_counter() - started


def _down(lab: Lab) -> float:
    lab.close()
    started = time.perf_counter()
    tear_down(lab.state, lambda _: None)
    return time.perf_counter() - started


def _fanout(hosts: list[SshHost]) -> list[Comparison]:
    """Fan-out to 16 hosts vs. to one, for a host command that takes 10 ms, and for ``true``.

    On real lab hosts each host has its own CPU. Here all 16 emulated hosts
    (their sshd and bash) share this machine's cores with the controller, so
    a command that does no work on the host measures how fast this machine
    forks, not how well the bench fans out: its ratio is bounded below by
    the CPU all 16 round trips need divided by the core count, and by the
    controller's own CPU. Both are measured in the same run (``/proc/stat``,
    ``os.times``) and the larger is reported beside the fan-out's time.
    """
    one = hosts[:1]
    slow = f"sleep {HOST_WORK_S}"
    fan16 = median_ms(lambda: run_on_all(hosts, slow), FANOUTS)
    fan1 = median_ms(lambda: run_on_all(one, slow), FANOUTS)
    serial = median_ms(lambda: [h.run(slow) for h in hosts], 5, warmup=1)
    idle16 = median_ms(lambda: run_on_all(hosts, "true"), FANOUTS)
    idle1 = median_ms(lambda: run_on_all(one, "true"), FANOUTS)
    busy_before, own_before = _cpu_busy_s(), _own_cpu_s()
    rounds = 50
    for _ in range(rounds):
        run_on_all(hosts, "true")
    machine_ms = (_cpu_busy_s() - busy_before) / rounds * 1000
    controller_ms = (_own_cpu_s() - own_before) / rounds * 1000
    # The fan-out cannot beat either: all the machine's work spread over its
    # cores, or the controller's own work (one process, mostly one core).
    bound = max(machine_ms / (os.cpu_count() or 1), controller_ms)
    work = f"{HOST_WORK_S * 1000:g} ms host command"
    return [
        Comparison(
            "fanout_16_hosts",
            f"16 hosts, {work}",
            fan16,
            "1 host",
            fan1,
            "ms",
            "16 hosts within 3x of 1",
            fan16 <= 3 * fan1,
            FANOUTS,
        ),
        Comparison(
            "fanout_vs_serial",
            "fan-out to 16",
            fan16,
            "16 hosts one by one",
            serial,
            "ms",
            "fan-out overlaps hosts (ratio < 0.5)",
            fan16 < 0.5 * serial,
            5,
        ),
        Comparison(
            "fanout_16_idle_cmd",
            "16 hosts, `true`",
            idle16,
            "1 host",
            idle1,
            "ms",
            f"none: CPU-bound here (>= {bound / idle1:.1f}x on {os.cpu_count()} cores)",
            None,
            FANOUTS,
        ),
        Comparison(
            "fanout_cpu_bound",
            "16 hosts, `true`",
            idle16,
            "CPU lower bound",
            bound,
            "ms",
            "no waiting beyond the CPU bound (ratio <= 1.5)",
            idle16 <= 1.5 * bound,
            rounds,
        ),
    ]


def _own_cpu_s() -> float:
    """CPU time this process (all its threads) has used."""
    times = os.times()
    return times.user + times.system


def _cpu_busy_s() -> float:
    """CPU time all processes of this machine have used (busy jiffies of /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def run() -> list[Comparison]:
    results: list[Comparison] = []
    with tempfile.TemporaryDirectory() as tmp:
        small_path, _ = write_topology(Path(tmp), hosts=3)
        big_path, _ = write_topology(Path(tmp), hosts=16)
        small, small_up = _up(small_path)
        small_down = _down(small)
        big, big_up = _up(big_path)
        try:
            hosts = big.hosts()
            one = hosts[0]
            persistent = median_ms(lambda: one.run("true"), ROUND_TRIPS)
            fresh = median_ms(lambda: one.run_on_new_channel("true"), EXEC_CHANNELS)
            results.append(
                Comparison(
                    "ssh_round_trip",
                    "persistent shell",
                    persistent,
                    "fresh exec channel",
                    fresh,
                    "ms",
                    "persistent median < 2 ms",
                    persistent < 2.0,
                    ROUND_TRIPS,
                )
            )
            results += _fanout(hosts)
        finally:
            big_down = _down(big)
    per_host_small = (small_up + small_down) / 3
    per_host_big = (big_up + big_down) / 16
    results += [
        Comparison("lab_up", "16 hosts", big_up, "3 hosts", small_up, "s", "recorded", None, 1),
        Comparison(
            "lab_down", "16 hosts", big_down, "3 hosts", small_down, "s", "recorded", None, 1
        ),
        Comparison(
            "lab_cost_per_host",
            "16-host lab",
            per_host_big,
            "3-host lab",
            per_host_small,
            "s",
            "per-host cost does not grow (ratio <= 1.5)",
            per_host_big <= 1.5 * per_host_small,
            1,
        ),
    ]
    return results
