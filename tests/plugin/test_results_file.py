"""The results file: a run header, then test records; old files still read."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench import __version__
from bench.results import (
    ResultWriter,
    RunHeader,
    TestResult,
    read_results,
    read_run_header,
    write_summary,
)
from bench.topology import load_topology
from tests.plugin.conftest import EMULATED, RunBench

pytest_plugins = ["pytester"]


def test_the_file_opens_with_a_header_identifying_the_run(
    run_bench: RunBench, pytester: pytest.Pytester
) -> None:
    before = time.time()
    run_bench("def test_a():\n    pass\n\ndef test_b():\n    assert False\n")
    path = pytester.path / "results.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["record"] for r in records] == ["run", "test", "test"]
    header = read_run_header(path)
    assert header is not None
    assert header.topology == str((pytester.path / "topology.yaml").resolve())
    assert header.lab == "emu"
    assert header.bench_version == __version__
    assert before <= header.started_at <= time.time()
    assert [r.outcome for r in read_results(path)] == ["passed", "failed"]


def test_a_run_without_topology_still_has_a_header(
    run_bench: RunBench, pytester: pytest.Pytester
) -> None:
    run_bench("def test_a():\n    pass\n", None)
    header = read_run_header(pytester.path / "results.jsonl")
    assert header is not None and (header.topology, header.lab) == ("", "")


def test_old_lines_without_record_and_a_torn_line_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    old = {"nodeid": "t.py::test_old", "outcome": "passed", "duration": 0.5, "catalogue": ["X"]}
    path.write_text(json.dumps(old) + "\n" + '{"nodeid": "t.py::test_torn", "outc')
    assert read_run_header(path) is None
    (result,) = read_results(path)
    assert (result.nodeid, result.outcome, result.catalogue) == ("t.py::test_old", "passed", ("X",))


def test_writer_round_trip_and_later_headers_win(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "results.jsonl"
    writer = ResultWriter(path)
    writer.start(RunHeader("/t/a.yaml", "emu", "0.1.0", started_at=1.0))
    first = TestResult("t.py::test_a", "xfailed", 0.25, ("DP-02",), "known bug")
    writer.append(first)
    writer.start(RunHeader("/t/b.yaml", "emu", "0.1.0", started_at=2.0))
    assert read_results(path) == [first]
    assert read_run_header(path) == RunHeader("/t/b.yaml", "emu", "0.1.0", started_at=2.0)
    assert read_results(tmp_path / "missing.jsonl") == []
    assert read_run_header(tmp_path / "missing.jsonl") is None


def test_summary_counts_every_outcome_in_a_fixed_order(tmp_path: Path) -> None:
    results = [
        TestResult("t::a", "xpassed", 0.1, (), "flaky"),
        TestResult("t::b", "passed", 0.1),
        TestResult("t::c", "xfailed", 0.1, ("FB-01",), "known | bug"),
        TestResult("t::d", "failed", 0.1, (), "boom"),
    ]
    summary = write_summary(tmp_path, load_topology(EMULATED), results).read_text()
    assert "4 test(s): 1 passed, 1 failed, 1 xfailed, 1 xpassed" in summary
    assert "| FB-01 | `t::c` | xfailed | 0.10 | known \\| bug |" in summary
