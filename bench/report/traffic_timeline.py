"""A timeline (``bench.report.timeline``) from what the traffic checker measured.

The checker reports, per flow, arrivals per 1 ms from the flow's first
arrival (kernel receive timestamps, epoch clock), the longest gap between
arrivals and when it ended. That is enough to draw throughput over time and
to mark the blackout, with nothing estimated: every point is a count of
frames that arrived in its bin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.report.timeline import validate_timeline
from bench.traffic.results import DirectionResult

#: Width of one plotted bin: wide enough to smooth pacing jitter, narrow enough to show
#: a blackout of a few tens of milliseconds.
BIN_MS = 10


@dataclass(frozen=True)
class TimelineEvent:
    """Something that happened at an absolute time (epoch seconds), to draw on a timeline."""

    at: float
    label: str
    source: str = "bench"


@dataclass
class EventLog:
    """Events noted as they happen (``note("switch requested")``), stamped with time.time()."""

    source: str = "bench"
    events: list[TimelineEvent] = field(default_factory=list)
    #: Also told of each note (e.g. the ``step`` fixture, for the live progress view).
    echo: Callable[[str], None] | None = None

    def note(self, label: str, source: str | None = None) -> None:
        self.events.append(TimelineEvent(time.time(), label, source or self.source))
        if self.echo is not None:
            self.echo(label)


def _series(result: DirectionResult, t0: float, bin_ms: int) -> dict[str, Any]:
    """Arrivals per second in ``bin_ms`` bins, at each bin's start (relative to t0)."""
    offset = result.first_rx_ns / 1e9 - t0
    counts = result.timeline
    points: list[list[float]] = []
    for start in range(0, len(counts), bin_ms):
        chunk = counts[start : start + bin_ms]
        width_s = len(chunk) / 1000
        points.append([round(offset + start / 1000, 4), round(sum(chunk) / width_s, 1)])
    return {"name": result.name, "unit": "pps", "points": points}


def _blackout(result: DirectionResult, t0: float) -> dict[str, Any] | None:
    """The flow's longest gap, when it is longer than two sending intervals (one frame
    missing or late); a gap of the pacing itself is no blackout."""
    interval_ms = 1000 / result.send_pps if result.send_pps > 0 else 0.0
    if result.gap_end_ms <= 0 or result.longest_gap_ms <= 2 * interval_ms:
        return None
    end = result.first_rx_ns / 1e9 - t0 + result.gap_end_ms / 1000
    start = end - result.longest_gap_ms / 1000
    return {"name": result.name, "start": round(start, 4), "end": round(end, 4)}


def timeline_from_traffic(
    results: Sequence[DirectionResult],
    *,
    title: str,
    kind: str,
    events: Sequence[TimelineEvent] = (),
    figures: dict[str, float] | None = None,
    bin_ms: int = BIN_MS,
) -> dict[str, Any]:
    """A timeline of ``results`` (one series and at most one blackout per flow), with
    ``events`` placed on it and figures per flow: longest gap, frames lost.

    ``t0`` is the first arrival of any flow (or the first event when nothing arrived).
    """
    arrived = [r for r in results if r.first_rx_ns > 0]
    starts = [r.first_rx_ns / 1e9 for r in arrived] or [e.at for e in events] or [time.time()]
    t0 = min(starts)
    measured: dict[str, float] = {}
    for r in results:
        measured[f"longest gap ms {r.name}"] = round(r.longest_gap_ms, 3)
        measured[f"lost frames {r.name}"] = float(r.lost)
    blackouts = [b for r in arrived if (b := _blackout(r, t0)) is not None]
    timeline = {
        "title": title,
        "kind": kind,
        "t0": t0,
        "series": [_series(r, t0, bin_ms) for r in arrived],
        "events": [
            {"t": round(e.at - t0, 4), "label": e.label, "source": e.source}
            for e in sorted(events, key=lambda e: e.at)
        ],
        "blackouts": blackouts,
        "figures": {**measured, **(figures or {})},
    }
    return validate_timeline(timeline)


def device_events(
    events: Sequence[dict[str, Any]], since: float, until: float, source: str = "hypervisor"
) -> list[TimelineEvent]:
    """The vmxnet3 device's own timestamped events (its ``events`` operation: ``{"t": epoch,
    "event": name, ...}``) between ``since`` and ``until``, labelled with their details."""
    picked = []
    for event in events:
        at = event.get("t")
        if not isinstance(at, int | float) or not since <= at <= until:
            continue
        details = [
            f"{k} {v}"
            for k, v in event.items()
            if k not in ("t", "event", "host") and v is not None
        ]
        label = str(event.get("event", "?")) + (f" ({', '.join(details)})" if details else "")
        picked.append(TimelineEvent(float(at), label, source))
    return picked
