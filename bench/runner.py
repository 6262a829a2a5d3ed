"""``npabench run``: bring the lab up, run the suite under pytest, write results, tear down.

The suite runs in a child pytest process that attaches to the lab this
process brought up; the child dies with us (setpriv --pdeathsig), and the lab
is torn down in ``finally`` whatever happens, Ctrl-C included. Results are
appended by the pytest plugin as each test ends, so a crash keeps every
finished result on disk.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

import bench
from bench.errors import LabError
from bench.lab import bring_up_topology
from bench.lab.teardown import tear_down
from bench.progress import Progress
from bench.results import read_results, write_summary
from bench.signals import shielded
from bench.topology import load_topology

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
    """Run the conformance suite on a fresh lab; return the ``npabench`` exit status.

    0 every test passed; 1 a test failed or none ran; 2 bad pytest arguments;
    3 pytest itself failed; 130 interrupted.
    """
    topology = load_topology(topology_path)  # a bad file fails here, before anything is made
    suite = suite or DEFAULT_SUITE
    if not suite.exists():
        raise LabError(f"test suite {suite} does not exist")
    _clear_report(report_dir)
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
        with shielded():  # a second Ctrl-C must not cut the teardown or the report short
            try:
                lab.close()
            finally:
                tear_down(lab.state, progress)
                results = read_results(report_dir / "results.jsonl")
                summary = write_summary(report_dir, topology, results)
                progress(f"report: {summary}")
    if status == pytest.ExitCode.NO_TESTS_COLLECTED:
        progress("no test was selected or collected")
    return _EXIT_STATUS.get(pytest.ExitCode(status), 3) if status in _CODES else 3


#: pytest's exit code -> npabench's (see bench.cli).
_EXIT_STATUS = {
    pytest.ExitCode.OK: 0,
    pytest.ExitCode.TESTS_FAILED: 1,
    pytest.ExitCode.INTERRUPTED: 130,
    pytest.ExitCode.INTERNAL_ERROR: 3,
    pytest.ExitCode.USAGE_ERROR: 2,
    pytest.ExitCode.NO_TESTS_COLLECTED: 1,
}
_CODES = {int(code) for code in _EXIT_STATUS}


def _clear_report(report_dir: Path) -> None:
    """Remove what an earlier run wrote, so a report never mixes two runs.

    Only the bench's own files: the directory may hold other things of the user's.
    """
    report_dir.mkdir(parents=True, exist_ok=True)
    for name in ("results.jsonl", "junit.xml", "summary.md"):
        (report_dir / name).unlink(missing_ok=True)
    shutil.rmtree(report_dir / "artifacts", ignore_errors=True)
