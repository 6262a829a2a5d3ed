"""One timeline in the report: its plot, its numbered events, its blackouts and figures."""

from __future__ import annotations

from html import escape
from typing import Any

from bench.report.svg_plot import timeline_svg


def _events(timeline: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{n}</td><td>{e['t'] * 1000:.1f}</td><td>{escape(e['source'])}</td>"
        f"<td>{escape(e['label'])}</td></tr>"
        for n, e in enumerate(timeline["events"], start=1)
    )
    if not rows:
        return ""
    return (
        '<table class="events"><tr><th>#</th><th>t (ms)</th><th>source</th><th>event</th>'
        f"</tr>{rows}</table>"
    )


def _blackouts(timeline: dict[str, Any]) -> str:
    items = "".join(
        f"<li>{escape(b['name'])}: {(b['end'] - b['start']) * 1000:.1f} ms, from "
        f"{b['start'] * 1000:.1f} to {b['end'] * 1000:.1f} ms</li>"
        for b in timeline["blackouts"]
    )
    return f'<p>blackouts (shaded):</p><ul class="blackouts">{items}</ul>' if items else ""


def _figures(timeline: dict[str, Any]) -> str:
    figures = timeline.get("figures", {})
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{v:g}</td></tr>" for k, v in figures.items())
    return f'<table class="figures">{rows}</table>' if rows else ""


def timeline_section(timeline: dict[str, Any]) -> str:
    """A ``<figure>`` with the plot and, under it, what the plot can only number or shade."""
    return (
        f'<figure class="timeline" data-kind="{escape(timeline["kind"])}">'
        f"<figcaption>{escape(timeline['title'])} ({escape(timeline['kind'])})</figcaption>"
        f"{timeline_svg(timeline)}{_events(timeline)}{_blackouts(timeline)}"
        f"{_figures(timeline)}</figure>"
    )
