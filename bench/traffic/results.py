"""What a traffic run measured, per direction, as small frozen objects.

Built from the JSON lines the on-host agent prints (``agent.py send`` and
``agent.py recv``); every figure is the agent's own measurement, and loss is
``sent - unique``: the sender counts what the kernel accepted, the receiver
what arrived, so the checker itself can never invent loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class DirectionResult:
    """One direction (or one round trip) of one flow."""

    name: str
    flow: int
    sent: int
    received: int
    unique: int
    lost: int
    duplicates: int
    reordered: int
    corrupt: int
    longest_gap_ms: float
    #: Where the longest gap ended, in ms after the first arrival.
    gap_end_ms: float
    latency_p50_us: float
    latency_p99_us: float
    latency_max_us: float
    send_pps: float
    missing: tuple[tuple[int, int], ...]
    ring_drops: int
    first_rx_ns: int
    #: Arrivals per 1 ms bucket from ``first_rx_ns``.
    timeline: tuple[int, ...]
    #: Per ``missing`` range, the arrival that jumped over it (None when unknown): its
    #: seq, rx time and tx stamp (ns, the sender's clock); the range's seqs were sent
    #: just before it.
    missing_ends: tuple[tuple[int, int, int] | None, ...] = ()

    @property
    def exact(self) -> bool:
        """Whether the receiver saw every frame the kernel delivered (no ring drops)."""
        return self.ring_drops == 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["exact"] = self.exact
        return data


def direction_from_agent(
    name: str, flow: int, send: dict[str, Any], recv: dict[str, Any]
) -> DirectionResult:
    """Combine the sender's and the receiver's JSON reports of ``flow``."""
    stats: dict[str, Any] = recv.get("flows", {}).get(str(flow), {})
    unique = int(stats.get("unique", 0))
    sent = int(send.get("sent", 0))
    latency = stats.get("latency_ns") or {}
    first_rx = int(stats.get("first_rx_ns", 0))
    gap_end = int(stats.get("gap_end_ns", 0) or 0)
    timeline = stats.get("timeline") or {}
    return DirectionResult(
        name=name,
        flow=flow,
        sent=sent,
        received=int(stats.get("received", 0)),
        unique=unique,
        lost=max(sent - unique, 0),
        duplicates=int(stats.get("duplicates", 0)),
        reordered=int(stats.get("reordered", 0)),
        corrupt=int(stats.get("corrupt", 0)),
        longest_gap_ms=int(stats.get("longest_gap_ns", 0)) / 1e6,
        gap_end_ms=(gap_end - first_rx) / 1e6 if gap_end and first_rx else 0.0,
        latency_p50_us=int(latency.get("p50", 0)) / 1e3,
        latency_p99_us=int(latency.get("p99", 0)) / 1e3,
        latency_max_us=int(latency.get("max", 0)) / 1e3,
        send_pps=float(send.get("pps", 0.0)),
        missing=tuple((int(a), int(b)) for a, b in stats.get("missing", [])),
        ring_drops=int(recv.get("ring_drops", 0)),
        first_rx_ns=first_rx,
        timeline=tuple(int(c) for c in timeline.get("counts", [])),
        missing_ends=tuple(
            (int(e[0]), int(e[1]), int(e[2])) if e else None for e in stats.get("missing_ends", [])
        ),
    )


def format_table(results: list[DirectionResult]) -> str:
    """A plain-text table of the results, one row per direction."""
    header = (
        f"{'direction':<34} {'sent':>9} {'recv':>9} {'lost':>7} {'dup':>5} {'reord':>5} "
        f"{'gap ms':>8} {'p50 us':>8} {'p99 us':>8} {'max us':>8}  exact"
    )
    rows = [header, "-" * len(header)]
    for r in results:
        rows.append(
            f"{r.name:<34} {r.sent:>9} {r.unique:>9} {r.lost:>7} {r.duplicates:>5} "
            f"{r.reordered:>5} {r.longest_gap_ms:>8.3f} {r.latency_p50_us:>8.1f} "
            f"{r.latency_p99_us:>8.1f} {r.latency_max_us:>8.1f}  {'yes' if r.exact else 'NO'}"
        )
    return "\n".join(rows)
