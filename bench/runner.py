"""``npabench run``: bring the lab up, run the suite under pytest, write results, tear down.

The suite runs in a child pytest process that attaches to the lab this
process brought up; the child dies with us (setpriv --pdeathsig), and the lab
is torn down in ``finally`` whatever happens, Ctrl-C included. Results are
appended by the pytest plugin as each test ends, so a crash keeps every
finished result on disk.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import bench
from bench.errors import LabError
from bench.lab import bring_up_topology
from bench.lab.teardown import tear_down
from bench.results import read_results, write_summary
from bench.topology import load_topology

Progress = Callable[[str], None]
REPO_ROOT = Path(bench.__file__).resolve().parent.parent
DEFAULT_SUITE = REPO_ROOT / "tests" / "conformance"


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    """Let an interrupted pytest finish its reports, then make sure it is gone.

    Ctrl-C at a terminal has already reached the child (same process group);
    a SIGTERM to us has not, so it gets a SIGINT of its own.
    """
    for action in (None, signal.SIGINT, signal.SIGKILL):
        if action is not None:
            child.send_signal(action)
        try:
            child.wait(timeout=2 if action is None else 30)
            return
        except subprocess.TimeoutExpired:
            continue


def pytest_command(
    topology: Path, report_dir: Path, suite: Path, keyword: str | None, extra: Sequence[str]
) -> list[str]:
    """The child pytest command line (also printed, so it can be rerun by hand)."""
    argv = [
        # The child dies with us even on SIGKILL (prctl PR_SET_PDEATHSIG, set before exec).
        "setpriv",
        "--pdeathsig=KILL",
        "--",
        sys.executable,
        "-m",
        "pytest",
        str(suite),
        f"--rootdir={REPO_ROOT}",
        f"--topology={topology}",
        f"--results={report_dir / 'results.jsonl'}",
        f"--artifacts={report_dir / 'artifacts'}",
        f"--junitxml={report_dir / 'junit.xml'}",
        "-p",
        "bench.pytest_plugin",  # also for suites outside this repository's conftest.py
        "-p",
        "no:cacheprovider",
    ]
    if keyword:
        argv += ["-k", keyword]
    return argv + list(extra)


def run_suite(
    topology_path: Path,
    *,
    report_dir: Path,
    keyword: str | None,
    suite: Path | None,
    pytest_args: Sequence[str],
    progress: Progress,
) -> int:
    """Run the conformance suite on a fresh lab; return 0 if every test passed, else 1."""
    topology = load_topology(topology_path)  # a bad file fails here, before anything is made
    suite = suite or DEFAULT_SUITE
    if not suite.exists():
        raise LabError(f"test suite {suite} does not exist")
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "results.jsonl").unlink(missing_ok=True)
    argv = pytest_command(
        topology_path.resolve(), report_dir.resolve(), suite, keyword, pytest_args
    )
    lab = bring_up_topology(topology, topology_path.resolve(), progress)
    try:
        progress(f"running {suite}: {' '.join(argv[3:])}")
        child = subprocess.Popen(argv, cwd=REPO_ROOT)
        try:
            status = child.wait()
        except KeyboardInterrupt:
            _stop_child(child)
            raise
    finally:
        lab.close()
        tear_down(lab.state, progress)
        results = read_results(report_dir / "results.jsonl")
        summary = write_summary(report_dir, topology, results)
        progress(f"report: {summary}")
    if status == 5:
        progress("no test was selected or collected")
        return 1
    return 0 if status == 0 else 1
