"""Data path benchmarks (PF-01, PF-02), all in one run on the same interfaces.

* Throughput as RFC 2544 defines it: the highest offered rate (paced, stamped
  UDP, 128-byte frames) that loses at most 0.1%, found by a binary search of
  short trials — generator->guest and guest->generator, in passthrough, in
  emulation, and through the reference: one plain Python loop moving frames
  between the same TAP and the same uplink (``raw_forwarder``).
* The planned-switch blackout: the longest gap between arrivals while the
  guest switches passthrough -> emulation -> passthrough under traffic both
  ways, beside the longest gap of the same traffic without switches; and the
  frames lost doing it.

Targets (issue "NIC emulators and the NPA data path"): passthrough at least
1.5x emulation and at least 50% of the reference; blackout under 5 ms; 0 lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tests.benchmarks.figures import Comparison
from tests.nic.rig import Rig, one_way

TRIAL_S = 1.0
LOSS_TOLERANCE = 0.001
LOW, HIGH, STEPS = 5_000, 240_000, 7
SWITCH_PPS = 10_000
SWITCHES = 5
DIRECTIONS = (("t", "g1", "generator->guest"), ("g1", "t", "guest->generator"))


def throughput(rig: Rig, src: str, dst: str) -> float:
    """RFC 2544 throughput in frames/s (binary search over paced trials)."""
    low, high, best = LOW, HIGH, 0.0
    for _ in range(STEPS):
        rate = (low + high) // 2
        result = one_way(rig, src, dst, seconds=TRIAL_S, pps=rate)
        (stats,) = result["flows"].values()
        sent = result["sender"]["sent"]
        if sent and (sent - stats["received"]) / sent <= LOSS_TOLERANCE and not stats["duplicates"]:
            best, low = rate, rate
        else:
            high = rate
    return best


def _measure(make: Callable[[], Rig], prepare: Callable[[Rig], None]) -> dict[str, float]:
    with make() as rig:
        prepare(rig)
        return {label: throughput(rig, src, dst) for src, dst, label in DIRECTIONS}


def _to_emulation(rig: Rig) -> None:
    rig.wait_mode("passthrough")
    with rig.vmx() as vmx:
        vmx.call("switch", to="emulation")


def _gaps(rig: Rig, seconds: float, during: Callable[[], None]) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def run(src: str, dst: str, flow: int) -> None:
        results[src] = one_way(rig, src, dst, seconds=seconds, pps=SWITCH_PPS, flow=flow)

    threads = [
        threading.Thread(target=run, args=(s, d, n)) for n, (s, d, _) in enumerate(DIRECTIONS, 1)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    during()
    for thread in threads:
        thread.join()
    gap = max(next(iter(r["flows"].values()))["longest_gap_ns"] for r in results.values()) / 1e6
    lost = sum(
        r["sender"]["sent"] - next(iter(r["flows"].values()))["received"] for r in results.values()
    )
    sent = sum(r["sender"]["sent"] for r in results.values())
    return {"gap_ms": gap, "lost": lost, "sent": sent}


def _switches(rig: Rig) -> None:
    with rig.vmx() as vmx:
        for _ in range(SWITCHES):
            vmx.call("switch", to="emulation")
            time.sleep(0.1)
            vmx.call("switch", to="passthrough")
            time.sleep(0.1)


def run() -> list[Comparison]:
    print("data path: RFC 2544 throughput, passthrough / emulation / raw forwarder ...", flush=True)
    passthrough = _measure(Rig, lambda rig: rig.wait_mode("passthrough") and None)
    emulation = _measure(Rig, _to_emulation)
    raw = _measure(lambda: Rig(datapath=False), Rig.raw_forwarder)
    results = []
    for _, _, label in DIRECTIONS:
        results.append(
            Comparison(
                f"pps {label}",
                "passthrough",
                passthrough[label],
                "emulation",
                emulation[label],
                "frames/s",
                ">= 1.5x emulation",
                passthrough[label] >= 1.5 * emulation[label],
                STEPS,
            )
        )
        results.append(
            Comparison(
                f"pps {label} vs raw",
                "passthrough",
                passthrough[label],
                "raw forwarder",
                raw[label],
                "frames/s",
                ">= 0.5x raw loop",
                passthrough[label] >= 0.5 * raw[label],
                STEPS,
            )
        )
    print("data path: planned-switch blackout ...", flush=True)
    with Rig() as rig:
        rig.wait_mode("passthrough")
        quiet = _gaps(rig, 2.0, lambda: None)
        switching = _gaps(rig, 3.0, lambda: _switches(rig))
    results.append(
        Comparison(
            "switch blackout",
            "longest gap, switching",
            switching["gap_ms"],
            "without switches",
            quiet["gap_ms"],
            "ms",
            "< 5 ms",
            switching["gap_ms"] < 5.0,
            SWITCHES * 2,
        )
    )
    results.append(
        Comparison(
            "switch loss",
            "frames lost, switching",
            switching["lost"],
            "frames sent",
            switching["sent"],
            "frames",
            "0 lost",
            switching["lost"] == 0,
            SWITCHES * 2,
        )
    )
    return results
