"""What the traffic saw of one migration, per direction, lined up with the hypervisor's clock.

The checker reports, per flow, the sequence numbers it never received and
when its longest gap between arrivals ended (kernel receive timestamps; the
sender's stamps are time.time() on its host: on an emulated lab both are the
same clock as the hypervisor's events). Where the checker recorded the arrival
(seq j, sent at t) that jumped over a run of missing seqs, seq k of a flow
paced at R frames per second was sent (j - k) / R before t: timed by the
sender's clock, neither the sender's pacing drift over a long run nor the
queue a resumed guest works through before that arrival (frames held during
its stop) can move a lost frame out of the window it fell in. A run with no
recorded arrival is timed from the first arrival at the nominal rate (k / R
after it). A lost frame counts as lost *inside* the downtime when it was sent
between the guest's stop and resume, widened by ``limits.timeline_slack_ms``
for the way from the sender to where it was lost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bench.traffic.results import DirectionResult


@dataclass(frozen=True)
class WireView:
    name: str
    sent: int
    lost: int
    duplicates: int
    reordered: int
    #: The longest gap between arrivals, and when it began and ended (epoch seconds).
    blackout_ms: float
    blackout_from: float
    blackout_to: float
    lost_inside: int
    lost_outside: int
    #: Windows besides the downtime that the hypervisor declared (counted as inside).
    declared: int = 0
    #: Of ``lost_inside``: those due in the downtime itself, and per declared window (in
    #: the order declared; a frame in two windows counts for the first).
    lost_in_downtime: int = 0
    lost_declared: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Window = tuple[float, float]


def wire_view(
    result: DirectionResult,
    window: Window | None,
    slack_s: float,
    also: tuple[Window, ...] = (),
) -> WireView:
    """``result`` seen against ``window`` (the guest's stop and resume, epoch seconds) and
    the other windows in which the hypervisor declares the guest's path down (``also``:
    a failover guest ejecting its primary)."""
    windows = ([window] if window is not None else []) + list(also)
    by_window = [0] * len(windows)
    first_rx = result.first_rx_ns / 1e9
    gap_to = first_rx + result.gap_end_ms / 1000
    rate = result.send_pps or 1.0
    first_seq = result.missing[0][1] + 1 if result.missing and result.missing[0][0] == 0 else 0
    inside = outside = 0

    def count(lo: int, hi: int, end: tuple[int, int, int] | None = None) -> None:
        """Time the lost seqs lo..hi, back from the arrival that jumped them when known."""
        nonlocal inside, outside
        for seq in range(lo, hi + 1):
            if end is not None:
                at = end[2] / 1e9 - (end[0] - seq) / rate
            else:
                at = first_rx + (seq - first_seq) / rate
            hit = next(
                (
                    i
                    for i, (start, stop) in enumerate(windows)
                    if start - slack_s <= at <= stop + slack_s
                ),
                None,
            )
            if hit is None:
                outside += 1
            else:
                inside += 1
                by_window[hit] += 1

    listed = 0
    ends = result.missing_ends
    for index, (lo, hi) in enumerate(result.missing):
        if lo == 0 and first_seq:
            continue  # before the first arrival: counted as the tail below, not timed
        count(lo, hi, ends[index] if index < len(ends) else None)
        listed += hi - lo + 1
    head = first_seq
    tail = max(result.lost - listed - head, 0)
    outside += head  # lost before anything arrived: not attributable to the migration
    if tail:
        top = result.unique + listed + head
        count(top, top + tail - 1)
    return WireView(
        name=result.name,
        sent=result.sent,
        lost=result.lost,
        duplicates=result.duplicates,
        reordered=result.reordered,
        blackout_ms=result.longest_gap_ms,
        blackout_from=gap_to - result.longest_gap_ms / 1000,
        blackout_to=gap_to,
        lost_inside=inside,
        lost_outside=outside,
        declared=len(also),
        lost_in_downtime=by_window[0] if window is not None else 0,
        lost_declared=tuple(by_window[1:] if window is not None else by_window),
    )
