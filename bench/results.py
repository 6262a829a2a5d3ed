"""Test results as JSON lines, written as each test ends, and the run summary.

The file opens with one ``{"record": "run", ...}`` header naming the topology,
the lab, the bench version and the start time; then one ``{"record": "test",
...}`` line per finished test, flushed and fsynced at once: a crash of the run
(or of the machine) loses nothing that had finished.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bench.topology import Topology


@dataclass(frozen=True)
class TestResult:
    """The outcome of one test, as stored and reported."""

    __test__ = False  # not a pytest test class

    nodeid: str
    outcome: str  # passed | failed | error | skipped | xfailed | xpassed
    duration: float
    catalogue: tuple[str, ...] = ()
    message: str = ""
    artifacts: str = ""
    finished_at: float = field(default_factory=time.time)
    #: Timeline files (``record_timeline``), absolute paths, in the order recorded.
    timelines: tuple[str, ...] = ()
    #: Numeric figures the test measured (``record_figure``, timelines' ``figures``).
    figures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunHeader:
    """What identifies a run: the first record of its results file."""

    topology: str  # the topology file (absolute), "" when run without --topology
    lab: str
    bench_version: str
    started_at: float = field(default_factory=time.time)


#: Display order of outcomes (others, if any, follow alphabetically).
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
_TEST_FIELDS = frozenset(f.name for f in fields(TestResult))


class ResultWriter:
    """Appends records to a JSON-lines file, one durable line each."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def start(self, header: RunHeader) -> None:
        """Append the run's header record (before any test record)."""
        self._write({"record": "run", **asdict(header)})

    def append(self, result: TestResult) -> None:
        self._write({"record": "test", **asdict(result)})

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record) + "\n"
        with self.path.open("a") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())


def _records(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON object line of ``path`` (a torn last line from a crash is skipped)."""
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        try:
            raw = json.loads(line)
        except ValueError:
            continue
        if isinstance(raw, dict):
            records.append(raw)
    return records


def read_results(path: Path) -> list[TestResult]:
    """The test records of a results file (lines without ``record`` are old test lines)."""
    results: list[TestResult] = []
    for raw in _records(path):
        if raw.get("record", "test") != "test" or "nodeid" not in raw:
            continue
        values = {k: v for k, v in raw.items() if k in _TEST_FIELDS}
        values["catalogue"] = tuple(values.get("catalogue", ()))
        values["timelines"] = tuple(str(t) for t in values.get("timelines", ()))
        figures = values.get("figures")
        figures = figures if isinstance(figures, dict) else {}
        values["figures"] = {
            str(k): float(v) for k, v in figures.items() if isinstance(v, int | float)
        }
        try:
            results.append(TestResult(**values))
        except TypeError:  # a required field missing: not a record we can use
            continue
    return results


def read_run_header(path: Path) -> RunHeader | None:
    """The header of the last run recorded in ``path``, or None (an old file has none)."""
    names = {f.name for f in fields(RunHeader)}
    header = None
    for raw in _records(path):
        if raw.get("record") == "run":
            try:
                header = RunHeader(**{k: v for k, v in raw.items() if k in names})
            except TypeError:
                continue
    return header


def write_summary(report_dir: Path, topology: Topology, results: list[TestResult]) -> Path:
    """A Markdown summary of the run (the HTML report builds on the same results)."""
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    order = [o for o in OUTCOMES if o in counts] + sorted(set(counts) - set(OUTCOMES))
    lines = [
        f"# NPA Bench run on lab `{topology.lab.name}`",
        "",
        f"{len(results)} test(s): "
        + (", ".join(f"{counts[k]} {k}" for k in order) or "none finished"),
        "",
        "| catalogue | test | outcome | duration (s) | detail |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        detail = r.message.splitlines()[0][:120].replace("|", "\\|") if r.message else ""
        ids = ", ".join(r.catalogue) or "-"
        lines.append(f"| {ids} | `{r.nodeid}` | {r.outcome} | {r.duration:.2f} | {detail} |")
    path = report_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path
