"""Every run's results in a local SQLite database, for trends and ``npabench compare``.

One row per run (when, which lab and topology, how it ended, where its report
is), one per test (outcome, message, catalogue IDs) and one per figure a test
recorded. The path comes from ``--history``, else ``$NPABENCH_HISTORY``, else
``/var/lib/npabench/history.sqlite`` (the bench runs as root; a nightly job
keeps its history across checkouts).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.errors import LabError, UsageError
from bench.results import RunHeader, TestResult

DEFAULT_PATH = Path("/var/lib/npabench/history.sqlite")
ENV_VAR = "NPABENCH_HISTORY"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL, finished_at REAL NOT NULL,
    lab TEXT NOT NULL, topology TEXT NOT NULL, bench_version TEXT NOT NULL,
    status TEXT NOT NULL, exit_status INTEGER, report_dir TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tests (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    nodeid TEXT NOT NULL, catalogue TEXT NOT NULL, outcome TEXT NOT NULL,
    duration REAL NOT NULL, message TEXT NOT NULL,
    PRIMARY KEY (run_id, nodeid)
);
CREATE TABLE IF NOT EXISTS figures (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    nodeid TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (run_id, nodeid, name)
);
"""


def history_path(option: str | None) -> Path:
    """Where the history is: the option, else the environment, else the default."""
    return Path(option or os.environ.get(ENV_VAR) or DEFAULT_PATH)


@dataclass(frozen=True)
class RunRecord:
    """One run as the history lists it."""

    id: int
    started_at: float
    finished_at: float
    lab: str
    topology: str
    bench_version: str
    status: str
    exit_status: int | None
    report_dir: str
    counts: dict[str, int]


@dataclass(frozen=True)
class StoredTest:
    """One test of a stored run, with its figures."""

    nodeid: str
    catalogue: tuple[str, ...]
    outcome: str
    message: str
    figures: dict[str, float]


@contextmanager
def _open(path: Path, create: bool) -> Iterator[sqlite3.Connection]:
    if not create and not path.exists():
        raise UsageError(
            f"no run history at {path} (npabench run records every run there; choose another "
            f"file with --history or {ENV_VAR})"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=30)
    except (OSError, sqlite3.Error) as err:
        raise LabError(f"run history {path}: cannot open: {err}") from None
    with closing(connection) as db:
        try:
            db.execute("PRAGMA foreign_keys = ON")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise UsageError(
                    f"run history {path}: schema version {version} is newer than this bench "
                    f"understands ({SCHEMA_VERSION})"
                )
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            yield db
            db.commit()
        except sqlite3.DatabaseError as err:
            raise LabError(f"run history {path}: {err}") from None


def record_run(
    path: Path,
    header: RunHeader | None,
    results: list[TestResult],
    *,
    lab: str,
    status: str,
    exit_status: int | None,
    report_dir: Path,
    finished_at: float | None = None,
) -> int:
    """Store one run with its tests and figures; its run id."""
    finished = finished_at if finished_at is not None else time.time()
    started = header.started_at if header else finished
    with _open(path, create=True) as db:
        cursor = db.execute(
            "INSERT INTO runs (started_at, finished_at, lab, topology, bench_version, status, "
            "exit_status, report_dir) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                started,
                finished,
                header.lab if header and header.lab else lab,
                header.topology if header else "",
                header.bench_version if header else "",
                status,
                exit_status,
                str(report_dir.resolve()),
            ),
        )
        run_id = int(cursor.lastrowid or 0)
        for r in results:
            db.execute(
                "INSERT OR REPLACE INTO tests VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, r.nodeid, json.dumps(r.catalogue), r.outcome, r.duration, r.message),
            )
            db.executemany(
                "INSERT OR REPLACE INTO figures VALUES (?, ?, ?, ?)",
                [(run_id, r.nodeid, name, value) for name, value in r.figures.items()],
            )
    return run_id


def _counts(db: sqlite3.Connection, run_id: int) -> dict[str, int]:
    rows = db.execute(
        "SELECT outcome, COUNT(*) FROM tests WHERE run_id = ? GROUP BY outcome", (run_id,)
    )
    return {str(outcome): int(n) for outcome, n in rows}


def _record(db: sqlite3.Connection, row: tuple[object, ...]) -> RunRecord:
    run_id, started, finished, lab, topology, version, status, exit_status, report = row
    return RunRecord(
        id=int(str(run_id)),
        started_at=float(str(started)),
        finished_at=float(str(finished)),
        lab=str(lab),
        topology=str(topology),
        bench_version=str(version),
        status=str(status),
        exit_status=None if exit_status is None else int(str(exit_status)),
        report_dir=str(report),
        counts=_counts(db, int(str(run_id))),
    )


def list_runs(path: Path, limit: int | None = None) -> list[RunRecord]:
    """The runs, newest first (at most ``limit``)."""
    with _open(path, create=False) as db:
        query = "SELECT * FROM runs ORDER BY id DESC" + (" LIMIT ?" if limit else "")
        rows = db.execute(query, (limit,) if limit else ()).fetchall()
        return [_record(db, row) for row in rows]


def resolve_run(path: Path, name: str) -> int:
    """A run id from what the user typed: a number, ``latest`` or ``previous``."""
    if name in ("latest", "previous"):
        runs = list_runs(path, limit=2)
        wanted = 0 if name == "latest" else 1
        if len(runs) <= wanted:
            raise UsageError(f"run history {path}: no {name} run ({len(runs)} run(s) recorded)")
        return runs[wanted].id
    try:
        run_id = int(name)
    except ValueError:
        raise UsageError(
            f"run {name!r}: give a run id (npabench history), latest or previous"
        ) from None
    with _open(path, create=False) as db:
        if db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise UsageError(f"run history {path}: no run {run_id} (npabench history lists them)")
    return run_id


def run_record(path: Path, run_id: int) -> RunRecord:
    with _open(path, create=False) as db:
        row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UsageError(f"run history {path}: no run {run_id}")
        return _record(db, row)


def run_tests(path: Path, run_id: int) -> dict[str, StoredTest]:
    """The tests of run ``run_id`` by node id, with their figures."""
    with _open(path, create=False) as db:
        figures: dict[str, dict[str, float]] = {}
        for nodeid, name, value in db.execute(
            "SELECT nodeid, name, value FROM figures WHERE run_id = ?", (run_id,)
        ):
            figures.setdefault(nodeid, {})[name] = float(value)
        return {
            nodeid: StoredTest(
                nodeid, tuple(json.loads(catalogue)), outcome, message, figures.get(nodeid, {})
            )
            for nodeid, catalogue, outcome, message in db.execute(
                "SELECT nodeid, catalogue, outcome, message FROM tests WHERE run_id = ?",
                (run_id,),
            )
        }
