"""Live-migration benchmark (issue "Live migration"): per migration, what the hypervisor
says beside what the wire saw, and the time spent getting off and back onto a VF.

A throwaway lab (a generator, an alpha-10g host and a beta-25g host, one guest)
runs ``MIGRATIONS`` migrations back and forth under sequenced traffic both ways,
through the same orchestrator as the LM conformance tests. References come from
the same run: the wire's gaps beside the hypervisor's downtime, and the VF
release and return beside plain planned switches (``switch``) of the same guest.

Targets: the hypervisor's downtime under 50 ms (median and worst), no frame lost
outside the downtime (planned fallback loss 0), every migration's verdict passed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.lab import Lab, bring_up_topology
from bench.lab.teardown import tear_down
from bench.migration import MigrationRun, TrafficPlan, migrate_under_traffic
from bench.topology import load_topology
from tests.benchmarks.figures import Comparison
from tests.labkit import write_topology

MIGRATIONS = 10
PPS = 2000
SWITCHES = 10
DOWNTIME_TARGET_MS = 50.0


def _planned_switch_ms(lab: Lab, to: str) -> float:
    with lab.guest_control("vm1") as device:
        took: float = device.call("switch", to=to)["took_ms"]
    return took


def _wait_passthrough(lab: Lab) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with lab.guest_control("vm1") as device:
            status = device.call("status")
        if status["mode"] == "passthrough" and not status["busy"]:
            return
        time.sleep(0.01)
    raise RuntimeError(f"vm1 not in passthrough: {status}")


def _measure(lab: Lab) -> tuple[list[MigrationRun], list[float], list[float]]:
    _wait_passthrough(lab)
    to_emulation, to_passthrough = [], []
    for _ in range(SWITCHES):
        to_emulation.append(_planned_switch_ms(lab, "emulation"))
        to_passthrough.append(_planned_switch_ms(lab, "passthrough"))
    runs = []
    for hop in range(MIGRATIONS):
        target = "h2" if hop % 2 == 0 else "h1"
        runs.append(migrate_under_traffic(lab, "vm1", target, traffic=TrafficPlan(pps=PPS)))
    return runs, to_emulation, to_passthrough


def _values(runs: list[MigrationRun], name: str) -> list[float]:
    found = [getattr(r.figures, name) for r in runs]
    return [float(v) for v in found if v is not None]


def _wire(runs: list[MigrationRun], direction: str) -> list[float]:
    return [w.blackout_ms for r in runs for w in r.wire if w.name.startswith(direction)]


def _comparisons(
    runs: list[MigrationRun], to_emulation: list[float], to_passthrough: list[float]
) -> list[Comparison]:
    n = len(runs)
    downtime = _values(runs, "downtime_ms")
    rx = _wire(runs, "h0 ->")  # generator -> guest
    tx = _wire(runs, "vm1 ->")  # guest -> generator
    median = statistics.median
    lost_outside = sum(w.lost_outside for r in runs for w in r.wire)
    sent = sum(w.sent for r in runs for w in r.wire)
    passed = sum(r.verdict.passed for r in runs)
    return [
        Comparison("migration downtime", "hypervisor median", median(downtime),
                   "wire rx median", median(rx), "ms",
                   f"hypervisor < {DOWNTIME_TARGET_MS:g} ms",
                   median(downtime) < DOWNTIME_TARGET_MS, n),
        Comparison("migration downtime max", "hypervisor worst", max(downtime),
                   "wire rx worst", max(rx), "ms", f"< {DOWNTIME_TARGET_MS:g} ms",
                   max(downtime) < DOWNTIME_TARGET_MS, n),
        Comparison("migration wire tx", "wire tx (guest->gen) median", median(tx),
                   "hypervisor median", median(downtime), "ms", "recorded", None, n),
        Comparison("migration VF release", "VF release median",
                   median(_values(runs, "vf_release_ms")),
                   "planned switch to emulation", median(to_emulation), "ms", "recorded", None, n),
        Comparison("migration to passthrough", "destination VF median",
                   median(_values(runs, "to_passthrough_ms")),
                   "planned switch to passthrough", median(to_passthrough), "ms", "recorded",
                   None, n),
        Comparison("migration degraded", "emulation window median",
                   median(_values(runs, "degraded_ms")),
                   "hypervisor downtime median", median(downtime), "ms", "recorded", None, n),
        Comparison("migration loss", "lost outside downtime", float(lost_outside),
                   "frames sent", float(sent), "frames", "0", lost_outside == 0, n),
        Comparison("migration verdicts", "passed", float(passed), "migrations", float(n),
                   "runs", "all", passed == n, n),
    ]  # fmt: skip


def run() -> list[Comparison]:
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = write_topology(
            Path(tmp),
            hosts=3,
            nics={
                "h1": [{"name": "nic0", "model": "alpha-10g", "vfs": 2}],
                "h2": [{"name": "nic0", "model": "beta-25g", "vfs": 2}],
            },
            guests=1,
        )
        lab = bring_up_topology(load_topology(path), path)
        try:
            runs, to_emulation, to_passthrough = _measure(lab)
        finally:
            lab.close()
            tear_down(lab.state, lambda _: None)
    return _comparisons(runs, to_emulation, to_passthrough)
