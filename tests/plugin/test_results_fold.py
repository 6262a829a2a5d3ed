"""Each test's setup/call/teardown fold into one result: the worst outcome wins."""

from __future__ import annotations

import pytest

from bench.results import TestResult, read_results
from tests.plugin.conftest import RunBench

pytest_plugins = ["pytester"]

FOLD_SUITE = """
import pytest

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")

@pytest.fixture
def broken_setup():
    raise RuntimeError("setup broke")

@pytest.fixture
def skips_in_setup(broken_teardown):
    pytest.skip("no such thing here")

def test_passes():
    pass

def test_fails_then_teardown_errors(broken_teardown):
    assert 1 == 2, "call broke"

def test_skipped_in_setup_then_teardown_errors(skips_in_setup):
    pass

def test_setup_errors(broken_setup):
    pass

def test_passes_then_teardown_errors(broken_teardown):
    pass

def test_skips_in_call():
    pytest.skip("not today")

@pytest.mark.catalogue("DP-02")
def test_skipped_by_marker_with_catalogue():
    pass
"""

XFAIL_SUITE = """
import pytest

@pytest.mark.xfail(reason="known bug 12")
def test_xfails():
    assert False

def test_xfails_imperatively():
    pytest.xfail("not supported on this NIC")

@pytest.mark.xfail(reason="flaky on emulators")
def test_xpasses():
    pass

@pytest.mark.xfail(reason="must fail", strict=True)
def test_xpasses_strictly():
    pass
"""


def _by_name(results: list[TestResult]) -> dict[str, TestResult]:
    return {r.nodeid.split("::")[-1]: r for r in results}


def test_the_worst_phase_wins_and_the_first_failure_keeps_its_message(
    run_bench: RunBench, pytester: pytest.Pytester
) -> None:
    suite = FOLD_SUITE.replace(
        "def test_skipped_by_marker_with_catalogue",
        '@pytest.mark.skip(reason="marked off")\ndef test_skipped_by_marker_with_catalogue',
    )
    run = run_bench(suite)
    run.assert_outcomes(passed=2, failed=1, skipped=3, errors=4)
    results = _by_name(read_results(pytester.path / "results.jsonl"))
    assert len(results) == 7, "one record per test, whatever its phases did"

    assert results["test_passes"].outcome == "passed"
    assert results["test_passes"].message == ""

    failed = results["test_fails_then_teardown_errors"]
    assert failed.outcome == "failed"
    assert "call broke" in failed.message and "teardown broke" not in failed.message

    skipped_then_error = results["test_skipped_in_setup_then_teardown_errors"]
    assert skipped_then_error.outcome == "error"
    assert "teardown broke" in skipped_then_error.message

    assert results["test_setup_errors"].outcome == "error"
    assert "setup broke" in results["test_setup_errors"].message

    assert results["test_passes_then_teardown_errors"].outcome == "error"
    assert "teardown broke" in results["test_passes_then_teardown_errors"].message

    assert results["test_skips_in_call"].outcome == "skipped"
    assert results["test_skips_in_call"].message == "not today"

    marked = results["test_skipped_by_marker_with_catalogue"]
    assert (marked.outcome, marked.message, marked.catalogue) == (
        "skipped",
        "marked off",
        ("DP-02",),
    )


def test_xfail_and_xpass_are_recorded_with_their_reason(
    run_bench: RunBench, pytester: pytest.Pytester
) -> None:
    run = run_bench(XFAIL_SUITE)
    run.assert_outcomes(xfailed=2, xpassed=1, failed=1)
    results = _by_name(read_results(pytester.path / "results.jsonl"))

    assert (results["test_xfails"].outcome, results["test_xfails"].message) == (
        "xfailed",
        "known bug 12",
    )
    imperative = results["test_xfails_imperatively"]
    assert (imperative.outcome, imperative.message) == ("xfailed", "not supported on this NIC")
    xpassed = results["test_xpasses"]
    assert (xpassed.outcome, xpassed.message) == ("xpassed", "flaky on emulators")
    strict = results["test_xpasses_strictly"]
    assert strict.outcome == "failed", "a strict XPASS fails, as pytest reports it"
    assert "XPASS(strict)" in strict.message and "must fail" in strict.message


def test_durations_add_up_over_the_phases(run_bench: RunBench, pytester: pytest.Pytester) -> None:
    run_bench(
        """
import time, pytest

@pytest.fixture
def slow():
    time.sleep(0.1)
    yield
    time.sleep(0.1)

def test_slow(slow):
    time.sleep(0.1)
"""
    )
    (result,) = read_results(pytester.path / "results.jsonl")
    assert result.outcome == "passed"
    assert result.duration >= 0.3
