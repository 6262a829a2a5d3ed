"""The run's HTML report: one self-contained page (inline CSS and SVG, no script, no network).

Top-down as an engineer reads it: what ran where (run and topology), the
verdicts by catalogue ID, then per test what was expected and seen, its
timelines and the files to look at. Links are relative, so the report
directory can be copied or archived as a whole.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path

from bench.report.html_style import CSS
from bench.report.timeline import TimelineError, read_timeline
from bench.report.timeline_section import timeline_section
from bench.results import OUTCOMES, RunHeader, TestResult
from bench.topology import Host, Topology

#: At most this many files are listed per test (a capture-heavy test may write many).
MAX_FILES = 60


@dataclass(frozen=True)
class RunInfo:
    """What the page says about the run as a whole."""

    header: RunHeader | None
    #: complete | interrupted | crashed (the page says so at the top when not complete).
    status: str
    finished_at: float
    exit_status: int | None = None


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch))


def _link(report_dir: Path, path: Path, text: str | None = None) -> str:
    href = os.path.relpath(path, report_dir)
    return f'<a href="{escape(href)}">{escape(text or href)}</a>'


def _counts(results: list[TestResult]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    order = [o for o in OUTCOMES if o in counts] + sorted(set(counts) - set(OUTCOMES))
    return ", ".join(f'<span class="outcome-{o}">{counts[o]} {o}</span>' for o in order)


def _run_section(topology: Topology, run: RunInfo, results: list[TestResult]) -> str:
    header = run.header
    started = header.started_at if header else None
    rows = [
        ("lab", topology.lab.name),
        ("topology file", header.topology if header else ""),
        ("bench version", header.bench_version if header else ""),
        ("started", _when(started) if started else "?"),
        ("finished", _when(run.finished_at)),
        ("duration", f"{run.finished_at - started:.1f} s" if started else "?"),
        ("status", run.status + (f" (exit {run.exit_status})" if run.exit_status else "")),
    ]
    table = "".join(f"<tr><th>{k}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    banner = ""
    if run.status != "complete":
        banner = (
            f'<p class="banner">This run was {escape(run.status)}: the report lists every '
            "test that finished before that.</p>"
        )
    return (
        f'<section id="run">{banner}<table class="facts">{table}</table>'
        f"<p>{len(results)} test(s) finished: {_counts(results) or 'none'}</p></section>"
    )


def _host_row(host: Host) -> str:
    interfaces = ", ".join(f"{i.name} ({i.address or '-'}) on {i.switch}" for i in host.interfaces)
    nics = ", ".join(f"{n.name}: {n.model or n.pci or '?'}, {n.vfs} VFs" for n in host.nics)
    return (
        f"<tr><td>{escape(host.name)}</td><td>{host.backend}</td><td>{host.role}</td>"
        f"<td>{escape(interfaces)}</td><td>{escape(nics)}</td></tr>"
    )


def _topology_section(topology: Topology) -> str:
    hosts = "".join(_host_row(h) for h in topology.hosts)
    guests = "".join(
        f"<tr><td>{escape(g.name)}</td><td>{escape(g.host)}</td><td>{g.nic_mode}</td>"
        f"<td>{escape(str(g.address))}</td><td>{escape(g.mac)}</td></tr>"
        for g in topology.guests
    )
    instruments = "".join(
        f"<tr><td>{escape(i.name)}</td><td>{i.kind}</td><td>{escape(i.model or '-')}</td>"
        f"<td>{escape(', '.join(f'ch{w.channel} -> {w.to}' for w in i.wiring))}</td></tr>"
        for i in topology.instruments
    )
    limits = ", ".join(f"{k} {v}" for k, v in topology.limits.model_dump().items())
    parts = [
        '<section id="topology"><h2>Topology</h2>',
        "<table><tr><th>host</th><th>backend</th><th>role</th><th>interfaces</th>"
        f"<th>NICs</th></tr>{hosts}</table>",
    ]
    if guests:
        parts.append(
            "<table><tr><th>guest</th><th>host</th><th>NIC mode</th><th>address</th>"
            f"<th>MAC</th></tr>{guests}</table>"
        )
    if instruments:
        parts.append(
            "<table><tr><th>instrument</th><th>kind</th><th>model</th><th>wiring</th></tr>"
            f"{instruments}</table>"
        )
    parts.append(f'<p class="limits">limits: {escape(limits)}</p></section>')
    return "".join(parts)


def sort_key(result: TestResult) -> tuple[int, str, str]:
    """By catalogue ID (tests without one last), then by test."""
    ids = result.catalogue
    return (0 if ids else 1, ids[0] if ids else "", result.nodeid)


def _results_table(results: list[TestResult]) -> str:
    rows = []
    for n, r in enumerate(results, start=1):
        message = r.message.splitlines()[0][:160] if r.message else ""
        name = r.nodeid.split("::")[-1]
        rows.append(
            f'<tr class="outcome-{escape(r.outcome)}"><td>{escape(", ".join(r.catalogue) or "-")}'
            f'</td><td><a href="#test-{n}">{escape(name)}</a></td>'
            f'<td class="outcome">{escape(r.outcome)}</td><td>{r.duration:.2f}</td>'
            f"<td>{escape(message)}</td></tr>"
        )
    return (
        '<section><h2>Results</h2><table id="results"><thead><tr><th>catalogue</th>'
        "<th>test</th><th>outcome</th><th>s</th><th>detail</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _files(report_dir: Path, folder: Path) -> str:
    if not folder.is_dir():
        return ""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    items = [f"<li>{_link(report_dir, p, str(p.relative_to(folder)))}</li>" for p in files]
    more = len(items) - MAX_FILES
    tail = f"<li>... and {more} more in {_link(report_dir, folder)}</li>" if more > 0 else ""
    return f'<ul class="files">{"".join(items[:MAX_FILES])}{tail}</ul>' if items else ""


def _timelines(result: TestResult) -> tuple[str, list[str]]:
    """The test's timeline sections, and their titles."""
    parts, titles = [], []
    for name in result.timelines:
        path = Path(name)
        if not path.exists() and result.artifacts:  # the report directory was moved
            path = Path(result.artifacts) / path.name
        try:
            timeline = read_timeline(path)
        except TimelineError as err:
            parts.append(f'<p class="error">{escape(str(err))}</p>')
            continue
        parts.append(timeline_section(timeline))
        titles.append(str(timeline["title"]))
    return "".join(parts), titles


def _figures(result: TestResult, timeline_titles: list[str]) -> str:
    """The figures the test recorded itself (a timeline's are shown with its plot)."""
    own = {
        k: v
        for k, v in result.figures.items()
        if not any(k.startswith(f"{title}: ") for title in timeline_titles)
    }
    if not own:
        return ""
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{v:g}</td></tr>" for k, v in sorted(own.items()))
    return f'<table class="figures"><tr><th>figure</th><th>value</th></tr>{rows}</table>'


def _test_section(report_dir: Path, n: int, result: TestResult) -> str:
    message = f"<pre>{escape(result.message)}</pre>" if result.message else ""
    if result.artifacts:
        for failure in sorted(Path(result.artifacts).glob("failure-*.txt")):
            message += (
                f"<details><summary>{escape(failure.stem)}: traceback and output</summary>"
                f"<pre>{escape(failure.read_text(errors='replace'))}</pre></details>"
            )
    artifacts = _files(report_dir, Path(result.artifacts)) if result.artifacts else ""
    timelines, titles = _timelines(result)
    return (
        f'<section class="test outcome-{escape(result.outcome)}" id="test-{n}">'
        f"<h3>{escape(', '.join(result.catalogue) or '-')} "
        f"<code>{escape(result.nodeid)}</code></h3>"
        f'<p>verdict: <span class="outcome">{escape(result.outcome)}</span> '
        f"in {result.duration:.2f} s</p>{message}{timelines}{_figures(result, titles)}"
        f"{'<h4>artifacts</h4>' + artifacts if artifacts else ''}</section>"
    )


def _lab_logs(report_dir: Path) -> str:
    root = report_dir / "artifacts"
    parts = []
    for folder, what in (("hosts", "command log per host"), ("lab", "lab daemons' logs")):
        listing = _files(report_dir, root / folder)
        if listing:
            parts.append(f"<h3>{what}</h3>{listing}")
    return f'<section id="logs"><h2>Logs</h2>{"".join(parts)}</section>' if parts else ""


def render_report(
    report_dir: Path, topology: Topology, run: RunInfo, results: list[TestResult]
) -> str:
    """The whole page as a string."""
    ordered = sorted(results, key=sort_key)
    tests = "".join(_test_section(report_dir, n, r) for n, r in enumerate(ordered, start=1))
    title = f"NPA Bench report: lab {topology.lab.name}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f"</title><style>{CSS}</style></head><body><h1>{escape(title)}</h1>"
        f"{_run_section(topology, run, results)}{_results_table(ordered)}"
        f'{_topology_section(topology)}<section id="tests"><h2>Tests</h2>{tests}</section>'
        f"{_lab_logs(report_dir)}</body></html>\n"
    )
