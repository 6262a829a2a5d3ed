"""The run history in a real SQLite file: runs stored and listed, compared by verdict and
by figure (direction read from the figure's name, tolerances relative and absolute)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bench.errors import UsageError
from bench.history.compare import compare_runs, higher_is_better
from bench.history.store import list_runs, record_run, resolve_run, run_tests
from bench.results import RunHeader, TestResult


def store(db: Path, *results: TestResult, status: str = "complete") -> int:
    header = RunHeader("/t/lab.yaml", "emu", "0.1.0", started_at=1000.0)
    return record_run(
        db, header, list(results), lab="emu", status=status, exit_status=0, report_dir=db.parent
    )


def test_runs_are_stored_listed_newest_first_and_resolved(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "history.sqlite"
    first = store(db, TestResult("t::a", "passed", 1.0, ("FB-01",), figures={"gap ms": 2.0}))
    second = store(db, TestResult("t::a", "failed", 1.0, ("FB-01",), "boom"), status="crashed")
    runs = list_runs(db)
    assert [r.id for r in runs] == [second, first]
    assert runs[0].status == "crashed" and runs[0].counts == {"failed": 1}
    assert (resolve_run(db, "latest"), resolve_run(db, "previous")) == (second, first)
    (stored,) = run_tests(db, first).values()
    assert stored.catalogue == ("FB-01",) and stored.figures == {"gap ms": 2.0}
    with pytest.raises(UsageError, match="no run 42"):
        resolve_run(db, "42")
    with pytest.raises(UsageError, match="give a run id"):
        resolve_run(db, "yesterday")
    with pytest.raises(UsageError, match="no run history at"):
        list_runs(tmp_path / "missing.sqlite")


def test_a_history_from_a_newer_bench_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(UsageError, match="schema version 99 is newer"):
        list_runs(db)


def test_compare_verdicts_and_figures_both_ways(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    old = store(
        db,
        TestResult("t::stays", "passed", 1, figures={"blackout ms": 10.0, "tg pps": 1000.0}),
        TestResult("t::breaks", "passed", 1),
        TestResult("t::heals", "failed", 1),
        TestResult("t::skips", "passed", 1),
    )
    new = store(
        db,
        TestResult("t::stays", "passed", 1, figures={"blackout ms": 11.0, "tg pps": 500.0}),
        TestResult("t::breaks", "error", 1, message="teardown failed"),
        TestResult("t::heals", "passed", 1),
        TestResult("t::skips", "skipped", 1),
        TestResult("t::new", "failed", 1),
    )
    result = compare_runs(run_tests(db, old), run_tests(db, new), tolerance=0.2)
    assert [(c.nodeid, c.before, c.after) for c in result.newly_failing] == [
        ("t::breaks", "passed", "error"),
        ("t::new", "absent", "failed"),
    ]
    assert [c.nodeid for c in result.newly_passing] == ["t::heals"]
    assert [c.nodeid for c in result.other_changes] == ["t::skips"]
    (worse,) = result.figures_worse  # pps halved is worse; blackout +10% is within 20%
    assert (worse.name, worse.before, worse.after, worse.relative) == ("tg pps", 1000, 500, -0.5)
    assert result.regression
    back = compare_runs(run_tests(db, new), run_tests(db, old), tolerance=0.2)
    assert [m.name for m in back.figures_better] == ["tg pps"]
    assert [c.nodeid for c in back.newly_failing] == ["t::heals"]
    loose = compare_runs(run_tests(db, old), run_tests(db, new), tolerance=0.05, abs_tolerance=2)
    assert [m.name for m in loose.figures_worse] == ["tg pps"]  # 1 ms is under 2 ms


def test_direction_of_a_figure_is_read_from_its_name() -> None:
    assert higher_is_better("pps generator->guest") and higher_is_better("throughput Gbps")
    assert not higher_is_better("longest gap ms tg->vm1")
    assert not higher_is_better("downtime_ms (hypervisor)")
