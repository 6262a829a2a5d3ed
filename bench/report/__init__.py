"""The run's report: HTML page, JUnit XML and Markdown summary, from the results file.

Written by ``npabench run`` when the run ends, however it ends (tests done,
Ctrl-C, a crash of pytest): everything is rebuilt from ``results.jsonl``,
which has one durable line per finished test.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from bench.report.html_page import RunInfo, render_report
from bench.report.junit import add_attachments, write_junit
from bench.results import TestResult, read_results, read_run_header, write_summary
from bench.topology import Topology

HTML_NAME = "report.html"

__all__ = ["HTML_NAME", "RunInfo", "write_report"]


def write_report(
    report_dir: Path, topology: Topology, status: str, finished_at: float, exit_status: int | None
) -> tuple[Path, list[TestResult]]:
    """Write summary.md, junit.xml (completed or made) and report.html; the HTML's path and
    the results they show."""
    results_file = report_dir / "results.jsonl"
    results = read_results(results_file)
    write_summary(report_dir, topology, results)
    junit = report_dir / "junit.xml"
    try:
        add_attachments(junit, results, report_dir)
    except (OSError, ET.ParseError):  # none, or torn by a crash: made from the results
        write_junit(junit, results, topology.lab.name, report_dir)
    run = RunInfo(read_run_header(results_file), status, finished_at, exit_status)
    html = report_dir / HTML_NAME
    html.write_text(render_report(report_dir, topology, run, results))
    return html, results
