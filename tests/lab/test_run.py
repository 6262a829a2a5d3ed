"""``npabench run``: lab up, suite, results on disk as tests finish, lab down — whatever happens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.labkit import REPO, leftovers, npabench, wait_for, write_topology
from tests.report.chromium import Elements, dump_dom

SUITE = """
import os, pathlib, time
import pytest

@pytest.mark.catalogue("DP-02")
def test_passes(hosts):
    assert hosts["h0"].run("true").exit_status == 0

@pytest.mark.catalogue("FB-01")
def test_fails(hosts):
    result = hosts["h1"].run("echo seen; exit 4")
    assert result.exit_status == 0, f"h1 said {result.stdout.strip()!r}"

@pytest.mark.requires("instrument:power-supply")
def test_needs_a_power_supply(lab):
    pass

def test_blocks_if_asked(lab):
    gate = os.environ.get("NPABENCH_TEST_GATE")
    if not gate:
        return
    pathlib.Path(gate).write_text("started")
    if os.environ.get("NPABENCH_TEST_CRASH"):
        os.kill(os.getpid(), 9)  # pytest itself dies: no junit.xml, no summary from it
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)
"""


def _suite(tmp_path: Path) -> Path:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_sample.py").write_text(SUITE)
    return suite


def _results(report: Path) -> dict[str, dict]:
    records = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    tests = [r for r in records if r.get("record", "test") == "test"]
    return {r["nodeid"].split("::")[-1]: r for r in tests}


def test_run_writes_results_junit_and_summary_and_tears_down(tmp_path: Path) -> None:
    path, name = write_topology(tmp_path, hosts=2)
    report = tmp_path / "report"
    history = tmp_path / "history.sqlite"
    suite = str(_suite(tmp_path))
    done = npabench(
        "run", str(path), "--suite", suite, "--report", str(report), "--history", str(history)
    )
    assert done.returncode == 1, "one test failed"
    results = _results(report)
    assert results["test_passes"]["outcome"] == "passed"
    assert results["test_passes"]["catalogue"] == ["DP-02"]
    assert results["test_fails"]["outcome"] == "failed"
    assert "h1 said 'seen'" in results["test_fails"]["message"]
    assert results["test_needs_a_power_supply"]["outcome"] == "skipped"
    assert "lacks instrument:power-supply" in results["test_needs_a_power_supply"]["message"]

    junit = ET.parse(report / "junit.xml").getroot()
    props = {p.get("name"): p.get("value") for p in junit.iter("property")}
    assert props["lab"] == name and props["topology"] == str(path) and props["bench_version"]
    case = next(c for c in junit.iter("testcase") if c.get("name") == "test_passes")
    case_props = {(p.get("name"), p.get("value")) for p in case.iter("property")}
    assert ("catalogue", "DP-02") in case_props
    host_log = (report / "artifacts" / "hosts" / "h1.log").read_text()
    assert "echo seen; exit 4" in host_log
    summary = (report / "summary.md").read_text()
    assert "| DP-02 |" in summary and "failed" in summary
    html = (report / "report.html").read_text()
    assert 'id="results"' in html and "h1 said" in html
    assert (
        done.stderr.strip().splitlines()[-1]
        == f"npabench: report: {(report / 'report.html').resolve()}"
    )
    # not a terminal: progress as plain lines, test n of N
    assert "npabench: [2/4] failed in" in done.stderr, done.stderr
    listed = npabench("history", "--history", str(history), check=True).stdout
    assert "complete" in listed and str(report.resolve()) in listed
    assert leftovers(name) == []


def test_run_on_default_suite_passes(tmp_path: Path) -> None:
    psu = {"name": "psu1", "kind": "power-supply", "model": "NPA-PSU2", "channels": 2}
    path, name = write_topology(tmp_path, hosts=3, instruments=[psu])
    report = tmp_path / "report"
    # the QEMU igb host's PF-control variants do not depend on the topology (the session
    # of `make test` runs them): deselected, so this run does not boot that host again
    done = npabench("run", str(path), "--report", str(report), "--no-history", "-k", "not qemu-igb")
    assert done.returncode == 0, done.stdout + done.stderr
    results = _results(report).values()
    outcomes = {r["outcome"] for r in results}
    assert "passed" in outcomes and outcomes <= {"passed", "skipped"}, outcomes
    assert not [r for r in results if "[qemu-igb-" in r["nodeid"]]
    # this lab has no guests or NICs: what needs them skips, saying so
    for r in results:
        if r["outcome"] == "skipped":
            assert "lacks" in str(r), r
    assert leftovers(name) == []


def test_ctrl_c_keeps_finished_results_and_tears_down(tmp_path: Path, spawn_cli) -> None:
    path, name = write_topology(tmp_path, hosts=2)
    report, gate, history = tmp_path / "report", tmp_path / "gate", tmp_path / "history.sqlite"
    controller = spawn_cli(
        "run",
        str(path),
        "--suite",
        str(_suite(tmp_path)),
        "--report",
        str(report),
        env={**os.environ, "NPABENCH_TEST_GATE": str(gate), "NPABENCH_HISTORY": str(history)},
    )
    wait_for(gate.exists, 90, "the blocking test to start")
    controller.send_signal(signal.SIGINT)
    _, stderr = controller.communicate(timeout=60)
    assert controller.returncode == 130, stderr
    results = _results(report)
    assert results["test_passes"]["outcome"] == "passed"
    assert (report / "summary.md").exists()
    html = (report / "report.html").read_text()
    assert "This run was interrupted" in html and "test_passes" in html
    listed = npabench("history", "--history", str(history), check=True).stdout
    assert "interrupted" in listed
    assert leftovers(name) == []


def test_a_crashed_pytest_still_leaves_a_report_and_no_lab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, name = write_topology(tmp_path, hosts=2)
    report, gate = tmp_path / "report", tmp_path / "gate"
    monkeypatch.setenv("NPABENCH_TEST_GATE", str(gate))
    monkeypatch.setenv("NPABENCH_TEST_CRASH", "1")
    suite = str(_suite(tmp_path))
    done = npabench("run", str(path), "--suite", suite, "--report", str(report), "--no-history")
    assert done.returncode == 3, done.stderr
    results = _results(report)
    assert {results["test_passes"]["outcome"], results["test_fails"]["outcome"]} == {
        "passed",
        "failed",
    }
    assert "This run was crashed" in (report / "report.html").read_text()
    junit = ET.parse(report / "junit.xml").getroot()  # made from the results
    assert {c.get("name") for c in junit.iter("testcase")} >= {"test_passes", "test_fails"}
    assert leftovers(name) == []


COMPARED = """
import os
import pytest

REGRESS = bool(os.environ.get("NPABENCH_TEST_REGRESS"))

@pytest.mark.catalogue("FB-01")
def test_verdict(lab):
    assert not REGRESS, "regressed on purpose"

@pytest.mark.catalogue("PF-02")
def test_figure(lab, record_figure):
    record_figure("blackout ms", 80.0 if REGRESS else 10.0)
    record_figure("throughput pps", 1000.0)
"""


def test_compare_finds_an_injected_regression_in_a_verdict_and_a_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, name = write_topology(tmp_path, hosts=1)
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_compared.py").write_text(COMPARED)
    history = str(tmp_path / "history.sqlite")
    common = ["--suite", str(suite), "--history", history]
    good = npabench("run", str(path), "--report", str(tmp_path / "r1"), *common)
    assert good.returncode == 0, good.stderr
    monkeypatch.setenv("NPABENCH_TEST_REGRESS", "1")
    bad = npabench("run", str(path), "--report", str(tmp_path / "r2"), *common)
    assert bad.returncode == 1, bad.stderr

    worse = npabench("compare", "1", "2", "--history", history)
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert "newly failing (1):" in worse.stdout
    assert "FB-01" in worse.stdout and "passed -> failed: " in worse.stdout
    assert "blackout ms: 10 -> 80 (+700%)" in worse.stdout
    assert "throughput pps" not in worse.stdout  # it did not move
    assert worse.stdout.strip().endswith("REGRESSION")
    back = npabench("compare", "latest", "previous", "--history", history, "--json")
    assert back.returncode == 0, back.stdout
    data = json.loads(back.stdout)
    assert data["regression"] is False and len(data["newly_passing"]) == 1
    assert npabench("compare", "1", "2", "--history", history, "--tolerance", "800").returncode == 1
    unknown = npabench("compare", "1", "9", "--history", history)
    assert unknown.returncode == 2 and "no run 9" in unknown.stderr
    assert leftovers(name) == []


STEPPED = """
def test_one(lab):
    pass

def test_two(hosts):
    assert hosts["h0"].run("false").exit_status == 0, "h0 said no"

def test_three(lab):
    pass
"""


def test_step_mode_asks_before_each_test_and_shows_the_lab_after_a_failure(
    tmp_path: Path,
) -> None:
    path, name = write_topology(tmp_path, hosts=1)
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_stepped.py").write_text(STEPPED)
    report = tmp_path / "report"
    # run one, run two, go on after its failure, skip three, then tear the lab down
    answers = "\n\n\ns\n\n"
    argv = ["run", str(path), "--suite", str(suite), "--report", str(report), "--step"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", *argv, "--no-history"],
        input=answers,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert done.returncode == 1, done.stderr
    results = _results(report)
    assert [r["outcome"] for r in results.values()] == ["passed", "failed", "skipped"]
    assert "bring-up prompt" in results["test_three"]["message"]
    assert done.stderr.count("[Enter] run it, s skip it, q stop the run") == 3
    assert "FAILED (call)" in done.stderr and "h0 said no" in done.stderr
    assert "npabench ssh-config" in done.stderr and "h0 " in done.stderr
    assert leftovers(name) == []


def test_run_report_shows_the_fb01_timeline_in_chromium(tmp_path: Path) -> None:
    """Acceptance: the report of a run opens from disk in headless Chromium with the
    results table, FB-01's timeline plot (traffic both ways, events, figures) and a
    migration's (LM-02: the guest moves to a host with another vendor's NIC)."""
    nic = {"name": "nic0", "model": "alpha-10g", "vfs": 2}
    other = {"name": "nic0", "model": "beta-25g", "vfs": 2}
    path, name = write_topology(tmp_path, hosts=3, nics={"h1": [nic], "h2": [other]}, guests=1)
    report = tmp_path / "report"
    done = npabench(
        "run", str(path), "-k", "test_planned_switch_round_trip or lm_02", "--report",
        str(report), "--no-history", timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    html = report / "report.html"
    assert done.stderr.strip().splitlines()[-1] == f"npabench: report: {html.resolve()}"
    page = Elements(dump_dom(html, tmp_path / "profile"))
    assert page.by_id("results") is not None
    assert len(page.with_class("tr", "outcome-passed")) == 2
    plots = page.with_class("svg", "timeline-plot")
    assert sorted(p["data-kind"] for p in plots) == ["fallback", "migration"]
    assert len(page.with_class("polyline", "series")) == 4  # both directions, each plot
    sources = {e["data-source"] for e in page.with_class("line", "event")}
    assert sources == {"bench", "hypervisor"}, sources
    text = html.read_text()
    for event in ("switch to emulation requested", "vf-quiesced", "passthrough-active"):
        assert event in text, event
    for event in ("stop-and-copy-start", "resumed", "announce-sent"):  # the migration's
        assert event in text, event
    results = _results(report)
    figures = results["test_planned_switch_round_trip_loses_nothing_and_keeps_the_netdev"][
        "figures"
    ]
    assert any(k.endswith("switch to emulation ms") for k in figures), figures
    assert (report / "artifacts" / "lab").is_dir(), "the lab daemons' logs were not kept"
    assert leftovers(name) == []
