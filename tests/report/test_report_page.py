"""The HTML report, rendered by headless Chromium from disk: results table, timeline plots,
relative links only; JUnit XML references the captures and timelines."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench.report import write_report
from bench.topology import load_topology
from tests.report.chromium import Elements, dump_dom

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent.parent
TOPOLOGY = REPO / "topologies" / "emulated-lab.yaml"

SUITE = """
import time
import pytest

@pytest.mark.catalogue("FB-01")
def test_round_trip(record_timeline, record_figure, artifacts):
    (artifacts / "capture.pcap").write_bytes(b"\\xd4\\xc3\\xb2\\xa1")
    record_figure("switch took ms", 3.5)
    record_timeline({
        "title": "planned round trip", "kind": "fallback", "t0": time.time(),
        "series": [{"name": "tg->vm1", "unit": "pps",
                    "points": [[i / 100, 0 if 50 <= i < 54 else 2000] for i in range(100)]},
                   {"name": "vm1->tg", "unit": "pps",
                    "points": [[i / 100, 2000] for i in range(100)]}],
        "events": [{"t": 0.5, "label": "switch to emulation requested", "source": "bench"},
                   {"t": 0.501, "label": "vf-quiesced", "source": "hypervisor"}],
        "blackouts": [{"name": "tg->vm1", "start": 0.5, "end": 0.54}],
        "figures": {"longest gap ms tg->vm1": 40.0},
    })

@pytest.mark.catalogue("DP-02")
def test_fails():
    assert 1 == 2, "expected 0 lost frames, saw 1"

@pytest.mark.catalogue("DP-03")
def test_skips():
    pytest.skip("the topology lacks nic:sriov")

def test_bad_timeline(record_timeline):
    record_timeline({"title": "x", "kind": "fallback"})
"""


@pytest.fixture
def report(pytester: pytest.Pytester) -> Path:
    pytester.makepyfile(test_suite=SUITE)
    report_dir = pytester.path / "report"
    pytester.runpytest(
        "-p", "bench.pytest_plugin",
        f"--results={report_dir / 'results.jsonl'}",
        f"--artifacts={report_dir / 'artifacts'}",
        f"--junitxml={report_dir / 'junit.xml'}",
    )  # fmt: skip
    return report_dir


def test_results_record_timelines_and_figures_and_refuse_a_bad_one(report: Path) -> None:
    records = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    tests = {r["nodeid"].split("::")[-1]: r for r in records if r["record"] == "test"}
    (timeline,) = tests["test_round_trip"]["timelines"]
    assert Path(timeline).name == "timeline-1.json" and Path(timeline).exists()
    assert tests["test_round_trip"]["figures"] == {
        "switch took ms": 3.5,
        "planned round trip: longest gap ms tg->vm1": 40.0,
    }
    bad = tests["test_bad_timeline"]
    assert bad["outcome"] == "failed" and bad["timelines"] == []
    assert "timeline: missing key 't0'" in bad["message"], bad["message"]


def test_the_report_opens_in_chromium_with_results_and_timeline(
    report: Path, tmp_path: Path
) -> None:
    html, results = write_report(
        report, load_topology(TOPOLOGY), "complete", time.time(), exit_status=1
    )
    assert len(results) == 4
    page = Elements(dump_dom(html, tmp_path / "profile"))

    assert page.by_id("results") is not None, "no results table"
    rows = page.with_class("tr", "outcome-passed") + page.with_class("tr", "outcome-failed")
    rows += page.with_class("tr", "outcome-skipped")
    assert len(rows) == 4, rows  # one row per test: passed, 2 failed, skipped
    (plot,) = page.with_class("svg", "timeline-plot")
    assert plot["data-kind"] == "fallback"
    assert len(page.with_class("polyline", "series")) == 2
    assert [e["data-source"] for e in page.with_class("line", "event")] == ["bench", "hypervisor"]
    assert len(page.with_class("rect", "blackout")) == 1
    # Everything it links to is in the report directory, by a relative path that exists.
    links = page.links()
    assert any(link.endswith("capture.pcap") for link in links), links
    for link in (link for link in links if not link.startswith("#")):
        assert "://" not in link and not link.startswith("/"), link
        assert (report / link).exists(), link
    text = html.read_text()
    assert "expected 0 lost frames, saw 1" in text and "the topology lacks nic:sriov" in text
    assert "failure-call: traceback and output" in text and "assert 1 == 2" in text


def test_junit_references_captures_and_timelines(report: Path) -> None:
    write_report(report, load_topology(TOPOLOGY), "complete", time.time(), exit_status=1)
    junit = ET.parse(report / "junit.xml").getroot()
    case = next(c for c in junit.iter("testcase") if c.get("name") == "test_round_trip")
    attached = [p.get("value") for p in case.iter("property") if p.get("name") == "attachment"]
    assert sorted(Path(a).name for a in attached) == ["capture.pcap", "timeline-1.json"]
    out = case.findtext("system-out") or ""
    assert out.count("[[ATTACHMENT|/") == 2, out


def test_a_crashed_run_without_junit_gets_one_from_the_results(report: Path) -> None:
    (report / "junit.xml").write_text("<testsuites><testsu")  # torn by a crash
    write_report(report, load_topology(TOPOLOGY), "crashed", time.time(), exit_status=3)
    junit = ET.parse(report / "junit.xml").getroot()
    names = sorted(c.get("name") for c in junit.iter("testcase"))
    assert names == ["test_bad_timeline", "test_fails", "test_round_trip", "test_skips"]
    assert "This run was crashed" in (report / "report.html").read_text()
