"""What the hypervisor's own events say of one migration: its figures, in milliseconds.

* downtime: from the guest's stop (``stop-and-copy-start``) to its resume on
  the destination (``resumed``) — the hypervisor's figure, to set beside the
  one measured on the wire;
* VF release: how long the guest took to let go of its VF on the source;
* to passthrough: from the resume to ``passthrough-active`` on the destination;
* degraded window: from ``emulation-active`` on the source to
  ``passthrough-active`` on the destination (None if it never got there).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bench.hypervisor import HypervisorEvent, MigrationResult


@dataclass(frozen=True)
class MigrationFigures:
    downtime_ms: float | None
    vf_release_ms: float | None
    to_passthrough_ms: float | None
    degraded_ms: float | None
    total_ms: float
    #: Epoch seconds of the guest's stop and resume (None if it never stopped).
    stopped_at: float | None
    resumed_at: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _first(events: list[HypervisorEvent], name: str, host: str | None = None) -> float | None:
    return next((e.t for e in events if e.name == name and host in (None, e.host)), None)


def _ms(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round((end - start) * 1000, 3)


def migration_events(result: MigrationResult) -> list[HypervisorEvent]:
    """The events of this migration (the guest's log also holds its earlier history)."""
    return [e for e in result.events if e.t >= result.started_at]


def figures_of(result: MigrationResult) -> MigrationFigures:
    events = migration_events(result)
    stopped = _first(events, "stop-and-copy-start")
    resumed = _first(events, "resumed")
    released = next((e for e in events if e.name == "vf-release-done"), None)
    fallback = _first(events, "emulation-active", result.source)
    back = (
        next(
            (e.t for e in events if e.name == "passthrough-active" and e.t >= resumed),
            None,
        )
        if resumed is not None
        else None
    )
    start = _first(events, "migration-start") or result.started_at
    return MigrationFigures(
        downtime_ms=_ms(stopped, resumed),
        vf_release_ms=float(released.details["waited_ms"]) if released else None,
        to_passthrough_ms=_ms(resumed, back),
        degraded_ms=_ms(fallback, back),
        total_ms=round((result.finished_at - start) * 1000, 3),
        stopped_at=stopped,
        resumed_at=resumed,
    )
