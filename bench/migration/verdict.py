"""Judge one migration run against the topology's ``limits:``: a list of named checks.

Each check says what was expected and what was seen, so a failed migration
reads as its reason. The thresholds are the topology's (see ``Limits``):
``migration_downtime_ms`` bounds the hypervisor's downtime, ``blackout_ms``
the longest gap between arrivals on the wire per direction (the downtime as
the guest's peers see it: the announce travelling, the destination taking in
the first frames), ``loss_packets`` the frames lost outside the downtime,
``passthrough_return_s`` the time back to a VF at the destination.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bench.hypervisor import MigrationResult
from bench.migration.figures import MigrationFigures
from bench.migration.wire import WireView
from bench.topology.model import Limits
from bench.traffic.tcp import TcpContinuity


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    expected: str
    seen: str


@dataclass(frozen=True)
class Verdict:
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}

    def describe(self) -> str:
        lines = [
            f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: expected {c.expected}, seen {c.seen}"
            for c in self.checks
        ]
        return "\n".join([f"verdict: {'PASS' if self.passed else 'FAIL'}", *lines])


@dataclass(frozen=True)
class Expectation:
    """What a scenario expects: the outcome, and whether the destination offers a VF."""

    outcome: str = "completed"
    passthrough_at_end: bool = True


def _fmt(value: float | None, unit: str = "ms") -> str:
    return "none" if value is None else f"{value:.1f} {unit}"


def judge(
    result: MigrationResult,
    figures: MigrationFigures,
    wire: list[WireView],
    limits: Limits,
    expect: Expectation,
    *,
    learned: tuple[str, str] | None = None,
    tcp: TcpContinuity | None = None,
) -> Verdict:
    checks = [
        Check(
            "outcome",
            result.outcome == expect.outcome,
            expect.outcome,
            f"{result.outcome}{': ' + result.reason if result.reason else ''}",
        )
    ]
    moved = result.outcome == "completed"
    bound = float(limits.migration_downtime_ms)
    if moved:
        checks.append(
            Check(
                "downtime (hypervisor)",
                figures.downtime_ms is not None and figures.downtime_ms <= bound,
                f"<= {bound:g} ms",
                _fmt(figures.downtime_ms),
            )
        )
    blackout = float(limits.blackout_ms)
    for view in wire:
        if moved:
            checks.append(
                Check(
                    f"blackout on the wire, {view.name}",
                    view.blackout_ms <= blackout,
                    f"<= {blackout:g} ms",
                    f"{view.blackout_ms:.1f} ms",
                )
            )
        allowed = int(limits.loss_packets)
        # outside the downtime and the windows the hypervisor declares (none: all of it)
        lost = view.lost_outside
        checks.append(
            Check(
                f"loss {'outside the downtime' if moved else ''}, {view.name}".replace(" ,", ",")
                + (" (and the hypervisor's declared windows)" if view.declared else ""),
                lost <= allowed,
                f"<= {allowed}",
                f"{lost} (of {view.lost} lost, {view.sent} sent)",
            )
        )
        checks.append(
            Check(
                f"order, {view.name}",
                view.duplicates == 0 and view.reordered == 0,
                "0 duplicated, 0 reordered",
                f"{view.duplicates} duplicated, {view.reordered} reordered",
            )
        )
    host = result.destination if moved else result.source
    checks.append(Check("guest runs on", result.host == host, host, result.host))
    if learned is not None or moved:
        checks.append(
            Check(
                "switch learned the guest's port",
                learned is not None and learned[0] == host,
                f"a port of {host}",
                "/".join(learned) if learned else "not learned",
            )
        )
    if expect.passthrough_at_end:
        limit_ms = float(limits.passthrough_return_s) * 1000
        back = figures.to_passthrough_ms if moved else 0.0
        checks.append(
            Check(
                "passthrough at the end",
                result.mode == "passthrough" and back is not None and back <= limit_ms,
                f"passthrough{f' within {limit_ms:g} ms of the resume' if moved else ''}",
                f"{result.mode} ({result.plugin or result.mode_reason})"
                + (f" after {_fmt(back)}" if moved else ""),
            )
        )
    else:
        checks.append(
            Check(
                "degraded, with the reason",
                result.mode == "emulation" and bool(result.mode_reason),
                "emulation with a reason",
                f"{result.mode}: {result.mode_reason or 'no reason'}",
            )
        )
    if tcp is not None:
        error = f", {tcp.error}" if tcp.error else ""
        checks.append(
            Check(
                "TCP stream intact",
                tcp.intact,
                "same bytes, same hash, no reset",
                f"{tcp.received_bytes}/{tcp.sent_bytes} bytes, reset={tcp.reset}, "
                f"longest stall {tcp.longest_stall_ms:.0f} ms{error}",
            )
        )
    return Verdict(tuple(checks))
