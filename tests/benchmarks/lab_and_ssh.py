"""Foundation benchmarks: SSH round trips, fan-out to 16 hosts, lab up/down.

Targets (issue "Foundation"): persistent-channel round trip under 2 ms median;
16-host fan-out within 3x of one host.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.lab import Lab, bring_up_topology
from bench.lab.teardown import tear_down
from bench.ssh import run_on_all
from bench.topology import load_topology
from tests.benchmarks.figures import Comparison, median_ms
from tests.labkit import write_topology

ROUND_TRIPS = 300
EXEC_CHANNELS = 30
FANOUTS = 60


def _up(path: Path) -> tuple[Lab, float]:
    started = time.perf_counter()
    lab = bring_up_topology(load_topology(path), path)
    return lab, time.perf_counter() - started


def _down(lab: Lab) -> float:
    lab.close()
    started = time.perf_counter()
    tear_down(lab.state, lambda _: None)
    return time.perf_counter() - started


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
            fan16 = median_ms(lambda: run_on_all(hosts, "true"), FANOUTS)
            fan1 = median_ms(lambda: run_on_all([one], "true"), FANOUTS)
            results.append(
                Comparison(
                    "fanout_16_hosts",
                    "16 hosts",
                    fan16,
                    "1 host",
                    fan1,
                    "ms",
                    "16 hosts within 3x of 1",
                    fan16 <= 3 * fan1,
                    FANOUTS,
                )
            )
        finally:
            big_down = _down(big)
    per_host_small = (small_up + small_down) / 3
    per_host_big = (big_up + big_down) / 16
    results += [
        Comparison("lab_up", "16 hosts", big_up, "3 hosts", small_up, "s", "recorded", True, 1),
        Comparison(
            "lab_down", "16 hosts", big_down, "3 hosts", small_down, "s", "recorded", True, 1
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
