"""Test results as JSON lines, written as each test ends, and the run summary.

One line per finished test, flushed and fsynced at once: a crash of the run
(or of the machine) loses nothing that had finished.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.topology import Topology


@dataclass(frozen=True)
class TestResult:
    """The outcome of one test, as stored and reported."""

    __test__ = False  # not a pytest test class

    nodeid: str
    outcome: str  # passed | failed | skipped | error
    duration: float
    catalogue: tuple[str, ...] = ()
    message: str = ""
    artifacts: str = ""
    finished_at: float = field(default_factory=time.time)


class ResultWriter:
    """Appends results to a JSON-lines file, one durable line per test."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def append(self, result: TestResult) -> None:
        line = json.dumps(asdict(result)) + "\n"
        with self.path.open("a") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())


def read_results(path: Path) -> list[TestResult]:
    """Every complete line of a results file (a torn last line from a crash is skipped)."""
    results: list[TestResult] = []
    if not path.exists():
        return results
    for line in path.read_text().splitlines():
        try:
            raw: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        raw["catalogue"] = tuple(raw.get("catalogue", ()))
        results.append(TestResult(**raw))
    return results


def write_summary(report_dir: Path, topology: Topology, results: list[TestResult]) -> Path:
    """A Markdown summary of the run (the HTML report builds on the same results)."""
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    lines = [
        f"# NPA Bench run on lab `{topology.lab.name}`",
        "",
        f"{len(results)} test(s): "
        + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none finished"),
        "",
        "| catalogue | test | outcome | duration (s) | detail |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        detail = r.message.splitlines()[0][:120] if r.message else ""
        ids = ", ".join(r.catalogue) or "-"
        lines.append(f"| {ids} | `{r.nodeid}` | {r.outcome} | {r.duration:.2f} | {detail} |")
    path = report_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path
