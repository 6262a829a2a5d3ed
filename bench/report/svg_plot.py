"""A timeline drawn as inline SVG: throughput per series over time, events, blackouts.

Plain SVG elements with classes the page's CSS styles (``series``, ``event``,
``blackout``), so the report opens from disk with no script and no network.
Events are numbered on the plot and listed in full under it: switch steps
milliseconds apart would otherwise print their labels over each other.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

WIDTH, HEIGHT = 920, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 42
#: Series colours (colour-blind safe, Okabe-Ito).
COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000")


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values covering [low, high] (1, 2 or 5 times a power of ten apart)."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _format(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


class _Scale:
    """Maps data coordinates (seconds, value) to the plot area's pixels."""

    def __init__(self, t_range: tuple[float, float], y_max: float) -> None:
        self.t_low, self.t_high = t_range
        self.y_max = y_max

    def x(self, t: float) -> float:
        span = self.t_high - self.t_low or 1.0
        return LEFT + (t - self.t_low) / span * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        return HEIGHT - BOTTOM - value / (self.y_max or 1.0) * (HEIGHT - TOP - BOTTOM)


def _extent(timeline: dict[str, Any]) -> tuple[tuple[float, float], float]:
    times = [p[0] for s in timeline["series"] for p in s["points"]]
    times += [e["t"] for e in timeline["events"]]
    times += [b["start"] for b in timeline["blackouts"]] + [b["end"] for b in timeline["blackouts"]]
    values = [p[1] for s in timeline["series"] for p in s["points"]]
    t_low, t_high = (min(times), max(times)) if times else (0.0, 1.0)
    ticks = nice_ticks(0.0, max(values) if values else 1.0)
    return (min(t_low, 0.0), t_high if t_high > t_low else t_low + 1.0), ticks[-1] or 1.0


def _axes(scale: _Scale, unit: str) -> list[str]:
    parts = []
    bottom, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    for tick in nice_ticks(0.0, scale.y_max, 5):
        y = scale.y(tick)
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">')
        parts.append(f"{_format(tick)}</text>")
    for tick in nice_ticks(scale.t_low, scale.t_high, 8):
        x = scale.x(tick)
        parts.append(f'<line class="grid" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{bottom}"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">')
        parts.append(f"{tick:g}</text>")
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}"/>')
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/>')
    parts.append(
        f'<text class="label" x="{(LEFT + right) / 2:.0f}" y="{HEIGHT - 6}" '
        'text-anchor="middle">time (s)</text>'
    )
    parts.append(
        f'<text class="label" x="14" y="{(TOP + bottom) / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(TOP + bottom) / 2:.0f})">{escape(unit)}</text>'
    )
    return parts


def _blackouts(timeline: dict[str, Any], scale: _Scale) -> list[str]:
    parts = []
    for b in timeline["blackouts"]:
        x0, x1 = scale.x(b["start"]), scale.x(b["end"])
        width = max(x1 - x0, 1.5)  # a few ms still shows
        ms = (b["end"] - b["start"]) * 1000
        title = f"blackout {b['name']}: {ms:.1f} ms from {b['start']:.3f} s"
        parts.append(
            f'<rect class="blackout" x="{x0:.1f}" y="{TOP}" width="{width:.1f}" '
            f'height="{HEIGHT - TOP - BOTTOM}"><title>{escape(title)}</title></rect>'
        )
    return parts


def _series(timeline: dict[str, Any], scale: _Scale) -> list[str]:
    parts = []
    for i, series in enumerate(timeline["series"]):
        colour = COLOURS[i % len(COLOURS)]
        points = " ".join(f"{scale.x(t):.1f},{scale.y(v):.1f}" for t, v in series["points"])
        parts.append(
            f'<polyline class="series" data-name="{escape(series["name"])}" '
            f'stroke="{colour}" points="{points}"><title>{escape(series["name"])}</title>'
            "</polyline>"
        )
        x = LEFT + 8 + i * 170
        parts.append(f'<rect x="{x}" y="8" width="14" height="4" fill="{colour}"/>')
        parts.append(f'<text class="legend" x="{x + 18}" y="14">{escape(series["name"])}</text>')
    return parts


def _events(timeline: dict[str, Any], scale: _Scale) -> list[str]:
    parts = []
    for n, event in enumerate(timeline["events"], start=1):
        x = scale.x(event["t"])
        label = f"{n}: {event['label']} ({event['source']}, {event['t']:.3f} s)"
        parts.append(
            f'<line class="event" data-source="{escape(event["source"])}" x1="{x:.1f}" '
            f'y1="{TOP}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM}"><title>{escape(label)}</title></line>'
        )
        y = TOP + 10 + (n - 1) % 4 * 11  # staggered: close events keep readable numbers
        parts.append(f'<text class="event-number" x="{x + 2:.1f}" y="{y}">{n}</text>')
    return parts


def timeline_svg(timeline: dict[str, Any]) -> str:
    """The plot of one (validated) timeline as an ``<svg>`` element."""
    t_range, y_max = _extent(timeline)
    scale = _Scale(t_range, y_max)
    units = sorted({s["unit"] for s in timeline["series"]}) or ["pps"]
    body = [
        *_axes(scale, " / ".join(units)),
        *_blackouts(timeline, scale),
        *_series(timeline, scale),
        *_events(timeline, scale),
    ]
    return (
        f'<svg class="timeline-plot" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'data-kind="{escape(timeline["kind"])}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}"><title>{escape(timeline["title"])}</title>'
        + "".join(body)
        + "</svg>"
    )
