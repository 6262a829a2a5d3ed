"""The plugin's progress events, bring-up gate and figure recording, in a real pytest run."""

from __future__ import annotations

import json

import pytest

from tests.plugin.conftest import RunBench

pytest_plugins = ["pytester"]

SUITE = """
import pytest

def test_a(step, record_figure):
    step("switch to emulation")
    record_figure("blackout ms", 12.5)

def test_b():
    assert False, "seen 3, expected 0"

def test_c():
    pass
"""


def _events(pytester: pytest.Pytester) -> list[dict[str, object]]:
    lines = (pytester.path / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_progress_events_say_test_n_of_total_step_and_outcome(
    run_bench: RunBench, pytester: pytest.Pytester
) -> None:
    run_bench(SUITE, None, f"--progress={pytester.path / 'events.jsonl'}")
    events = _events(pytester)
    assert events[0] == {"event": "collected", "total": 3}
    starts = [
        (e["index"], str(e["nodeid"]).split("::")[-1]) for e in events if e["event"] == "start"
    ]
    assert starts == [(1, "test_a"), (2, "test_b"), (3, "test_c")]
    steps = [e["text"] for e in events if e["event"] == "step"][:4]
    assert steps == ["setup", "running", "switch to emulation", "teardown"]
    finished = [(e["outcome"], e["message"]) for e in events if e["event"] == "finished"]
    assert finished[0] == ("passed", "") and finished[2] == ("passed", "")
    assert finished[1][0] == "failed" and "seen 3, expected 0" in str(finished[1][1])
    results = [
        json.loads(line) for line in (pytester.path / "results.jsonl").read_text().splitlines()
    ]
    assert results[1]["figures"] == {"blackout ms": 12.5}


def test_the_gate_runs_skips_and_stops_as_answered(
    run_bench: RunBench, pytester: pytest.Pytester
) -> None:
    gate = pytester.path / "gate"
    gate.write_text("run\ngo on\nskip\n")  # test_a, after test_b's failure, test_c... skipped
    events_file = pytester.path / "events.jsonl"
    run_bench(SUITE, None, f"--progress={events_file}", f"--step-gate={gate}")
    outcomes = {
        str(e["nodeid"]).split("::")[-1]: e["outcome"]
        for e in _events(pytester)
        if e["event"] == "finished"
    }
    assert outcomes == {"test_a": "passed", "test_b": "failed", "test_c": "skipped"}
    kinds = [e["event"] for e in _events(pytester) if e["event"] in ("before", "failed")]
    assert kinds == ["before", "before", "failed", "before"]
    gate.write_text("quit\n")  # the first answer stops the run before anything runs
    events_file.unlink()
    run_bench(SUITE, None, f"--progress={events_file}", f"--step-gate={gate}")
    finished = [e for e in _events(pytester) if e["event"] == "finished"]
    assert [e["outcome"] for e in finished] == ["skipped"], finished


def test_a_figure_that_is_no_number_fails_the_test_saying_so(run_bench: RunBench) -> None:
    result = run_bench("def test_x(record_figure):\n    record_figure('gap', 'long')\n", None)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*record_figure('gap'): must be a finite number, got 'long'*"])
