"""What ``npabench history`` and ``npabench compare`` print, and their exit status.

``compare`` exits 1 on a regression (a newly failing test, a figure worse
beyond the tolerance) so a nightly job can fail on it, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from bench.errors import UsageError
from bench.history.compare import Comparison, FigureMove, VerdictChange, compare_runs
from bench.history.store import (
    DEFAULT_PATH,
    ENV_VAR,
    RunRecord,
    history_path,
    list_runs,
    resolve_run,
    run_record,
    run_tests,
)


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _counts(run: RunRecord) -> str:
    total = sum(run.counts.values())
    bad = run.counts.get("failed", 0) + run.counts.get("error", 0)
    return f"{total} tests: {run.counts.get('passed', 0)} passed, {bad} failed"


def show_history(path: Path, limit: int, as_json: bool) -> int:
    runs = list_runs(path, limit)
    if as_json:
        print(json.dumps([asdict(r) for r in runs], indent=2))
        return 0
    if not runs:
        print(f"no runs recorded in {path}")
        return 0
    print(f"{'run':>5}  {'started':<19}  {'lab':<8} {'status':<12} {'tests':<34} report")
    for r in runs:
        print(
            f"{r.id:>5}  {_when(r.started_at):<19}  {r.lab:<8} {r.status:<12} "
            f"{_counts(r):<34} {r.report_dir}"
        )
    return 0


def _name(change: VerdictChange | FigureMove) -> str:
    ids = ",".join(change.catalogue) or "-"
    return f"{ids} {change.nodeid}"


def _percent(move: FigureMove) -> str:
    return "new" if math.isinf(move.relative) else f"{move.relative * 100:+.0f}%"


def _print(comparison: Comparison, tolerance: float) -> None:
    sections: list[tuple[str, list[str]]] = [
        (
            "newly failing",
            [
                f"{_name(c)}: {c.before} -> {c.after}" + (f": {c.message}" if c.message else "")
                for c in comparison.newly_failing
            ],
        ),
        (
            "newly passing",
            [f"{_name(c)}: {c.before} -> {c.after}" for c in comparison.newly_passing],
        ),
        (
            "other changes",
            [f"{_name(c)}: {c.before} -> {c.after}" for c in comparison.other_changes],
        ),
        (
            f"figures worse by more than {tolerance * 100:g}%",
            [
                f"{_name(m)}: {m.name}: {m.before:g} -> {m.after:g} ({_percent(m)})"
                for m in comparison.figures_worse
            ],
        ),
        (
            f"figures better by more than {tolerance * 100:g}%",
            [
                f"{_name(m)}: {m.name}: {m.before:g} -> {m.after:g} ({_percent(m)})"
                for m in comparison.figures_better
            ],
        ),
    ]
    for title, lines in sections:
        print(f"{title} ({len(lines)}):")
        for line in lines:
            print(f"  {line}")


def compare(
    path: Path, run_a: str, run_b: str, *, tolerance: float, abs_tolerance: float, as_json: bool
) -> int:
    a, b = resolve_run(path, run_a), resolve_run(path, run_b)
    comparison = compare_runs(
        run_tests(path, a), run_tests(path, b), tolerance=tolerance, abs_tolerance=abs_tolerance
    )
    if as_json:
        data = {"run_a": a, "run_b": b, "regression": comparison.regression, **asdict(comparison)}
        print(json.dumps(data, indent=2, default=str))
    else:
        older, newer = run_record(path, a), run_record(path, b)
        print(f"run {a} ({_when(older.started_at)}, lab {older.lab}, {older.status})")
        print(f"  -> run {b} ({_when(newer.started_at)}, lab {newer.lab}, {newer.status})")
        _print(comparison, tolerance)
        print("REGRESSION" if comparison.regression else "no regression")
    return 1 if comparison.regression else 0


# -- the command line ----------------------------------------------------------------

AddParser = Callable[[str, str], argparse.ArgumentParser]


def add_history_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--history",
        default=None,
        metavar="FILE",
        help=f"run history database (default: ${ENV_VAR}, else {DEFAULT_PATH})",
    )


def _cmd_history(args: argparse.Namespace) -> int:
    return show_history(history_path(args.history), args.limit, args.json)


def _cmd_compare(args: argparse.Namespace) -> int:
    if args.tolerance < 0 or args.abs_tolerance < 0:
        raise UsageError("compare: --tolerance and --abs-tolerance must not be negative")
    return compare(
        history_path(args.history),
        args.run_a,
        args.run_b,
        tolerance=args.tolerance / 100,
        abs_tolerance=args.abs_tolerance,
        as_json=args.json,
    )


def add_parsers(add: AddParser) -> None:
    """``history`` and ``compare`` (the caller's ``add(name, help)`` makes a subparser)."""
    p = add("history", "list the runs recorded in the run history, newest first")
    add_history_option(p)
    p.add_argument("--limit", type=int, default=20, metavar="N", help="at most N runs (20)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_history)

    p = add(
        "compare",
        "compare two recorded runs: newly failing and passing tests, figures (blackout, "
        "downtime, pps) that moved beyond a tolerance; exit 1 on a regression",
    )
    p.add_argument("run_a", metavar="RUN_A", help="the older run: id, latest or previous")
    p.add_argument("run_b", metavar="RUN_B", help="the newer run: id, latest or previous")
    add_history_option(p)
    p.add_argument(
        "--tolerance",
        type=float,
        default=20.0,
        metavar="PCT",
        help="a figure moved when it changed by more than PCT percent (20)",
    )
    p.add_argument(
        "--abs-tolerance",
        type=float,
        default=0.0,
        metavar="X",
        help="...and by more than X in its own unit (0): ignores noise on tiny figures",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.epilog = (
        "Exit status 1 on a regression (a test failing in RUN_B that did not in RUN_A, "
        "a figure worse by more than the tolerance), 0 otherwise, 2 for an unknown run."
    )
    p.set_defaults(func=_cmd_compare)
