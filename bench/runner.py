"""``npabench run``: bring the lab up, run the suite under pytest, write the report, tear down.

The suite runs in a child pytest process that attaches to the lab this
process brought up; the child dies with us (setpriv --pdeathsig), and the lab
is torn down in ``finally`` whatever happens, Ctrl-C included. Results are
appended by the pytest plugin as each test ends, so a crash keeps every
finished result on disk, and the report (HTML, JUnit, summary) and the run
history are written from them after the teardown, for an interrupted or
crashed run too. The child's output and progress events pass through this
process (``bench.live``), which shows them and, in bring-up mode, asks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

import bench
from bench.bringup.access import lab_access
from bench.errors import BenchError, LabError
from bench.history.store import record_run
from bench.lab import Lab, bring_up_topology
from bench.lab.teardown import tear_down
from bench.live.display import StatusLine, display_for
from bench.live.monitor import ChildMonitor, Questions
from bench.progress import Progress
from bench.report import HTML_NAME, write_report
from bench.report.lab_logs import keep_lab_logs
from bench.results import TestResult, read_run_header
from bench.signals import shielded
from bench.topology import Topology, load_topology

REPO_ROOT = Path(bench.__file__).resolve().parent.parent
DEFAULT_SUITE = REPO_ROOT / "tests" / "conformance"


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


@dataclass(frozen=True)
class RunOptions:
    """How ``npabench run`` runs: where results go, which tests, bring-up mode."""

    report_dir: Path
    keyword: str | None = None
    suite: Path | None = None
    pytest_args: Sequence[str] = ()
    #: The SQLite run history (None: do not record the run).
    history: Path | None = None
    #: Bring-up: pause before each test and after a failure, keep a failed lab up.
    step: bool = False


def run_suite(topology_path: Path, options: RunOptions, progress: Progress) -> int:
    """Run the conformance suite on a fresh lab; return the ``npabench`` exit status.

    0 every test passed; 1 a test failed or none ran; 2 bad pytest arguments;
    3 pytest itself failed; 130 interrupted. The report is written and the lab
    torn down however the run ends.
    """
    topology = load_topology(topology_path)  # a bad file fails here, before anything is made
    suite = options.suite or DEFAULT_SUITE
    if not suite.exists():
        raise LabError(f"test suite {suite} does not exist")
    report_dir = options.report_dir
    _clear_report(report_dir)
    argv = pytest_command(
        topology_path.resolve(), report_dir.resolve(), suite, options.keyword, options.pytest_args
    )
    lab = bring_up_topology(topology, topology_path.resolve(), progress)
    status: int | None = None
    ending = "crashed"  # until the child's exit status says otherwise
    try:
        progress(f"running {suite}: {' '.join(argv[3:])}")
        status = _run_child(argv, lab, options.step)
        ending = "complete" if status in _COMPLETE else "crashed"
        if status == pytest.ExitCode.INTERRUPTED:
            ending = "interrupted"
        if options.step and status == pytest.ExitCode.TESTS_FAILED:
            _hold_for_inspection(lab, progress)
    except KeyboardInterrupt:
        ending = "interrupted"
        raise
    finally:
        with shielded():  # a second Ctrl-C must not cut the teardown or the report short
            try:
                _keep_logs(lab, report_dir, progress)
                lab.close()
            finally:
                tear_down(lab.state, progress)
                exit_status = _exit_status(status) if ending != "interrupted" else 130
                finish_report(
                    report_dir,
                    topology,
                    ending=ending,
                    exit_status=exit_status,
                    options=options,
                    progress=progress,
                )
    if status == pytest.ExitCode.NO_TESTS_COLLECTED:
        progress("no test was selected or collected")
    return _exit_status(status)


def _run_child(argv: list[str], lab: Lab, step: bool) -> int:
    """Run the pytest child with its progress shown live (and its questions asked)."""
    events_read, events_write = os.pipe()
    fds = [events_write]
    argv = [*argv, f"--progress=/dev/fd/{events_write}"]
    questions = None
    if step:
        gate_read, gate_write = os.pipe()
        fds.append(gate_read)
        argv.append(f"--step-gate=/dev/fd/{gate_read}")
        questions = Questions(gate_write, lambda: lab_access(lab))
    display = display_for()
    env = dict(os.environ)
    if isinstance(display, StatusLine):  # pytest writes to our pipe but for the terminal
        argv.append("--color=yes")
        env["COLUMNS"] = str(shutil.get_terminal_size().columns)
    try:
        child = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=fds,
        )
    finally:
        for fd in fds:
            os.close(fd)
    try:
        return ChildMonitor(child, events_read, display, questions).run()
    finally:
        os.close(events_read)
        if questions is not None:
            with contextlib.suppress(OSError):
                os.close(questions.gate)


def _hold_for_inspection(lab: Lab, progress: Progress) -> None:
    """Bring-up: a run with failures keeps its lab until the user has looked."""
    progress(f"not every test passed.\n{lab_access(lab)}")
    print("npabench: [Enter] tear the lab down: ", end="", file=sys.stderr, flush=True)
    sys.stdin.readline()


def _keep_logs(lab: Lab, report_dir: Path, progress: Progress) -> None:
    for problem in keep_lab_logs(lab.state.directory, report_dir / "artifacts" / "lab"):
        progress(problem)


def finish_report(
    report_dir: Path,
    topology: Topology,
    *,
    ending: str,
    exit_status: int,
    options: RunOptions,
    progress: Progress,
) -> None:
    """Write the report and record the run in the history; a failure of either is
    reported, never raised (the run's own outcome is the news)."""
    results: list[TestResult] = []
    html = None
    try:
        html, results = write_report(report_dir, topology, ending, time.time(), exit_status)
    except Exception as err:  # the report is best effort: the results file is on disk
        progress(f"report: could not be written: {type(err).__name__}: {err}")
    if options.history is not None:
        try:
            run_id = record_run(
                options.history,
                read_run_header(report_dir / "results.jsonl"),
                results,
                lab=topology.lab.name,
                status=ending,
                exit_status=exit_status,
                report_dir=report_dir,
            )
            progress(f"run recorded as run {run_id} in {options.history}")
        except BenchError as err:
            progress(f"run history: not recorded: {err}")
    if html is not None:
        progress(f"report: {html.resolve()}")


def _exit_status(status: int | None) -> int:
    if status is None:
        return 3
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
#: pytest exit codes of a run that went to its end (whatever the verdicts).
_COMPLETE = {
    pytest.ExitCode.OK,
    pytest.ExitCode.TESTS_FAILED,
    pytest.ExitCode.NO_TESTS_COLLECTED,
}


def _clear_report(report_dir: Path) -> None:
    """Remove what an earlier run wrote, so a report never mixes two runs.

    Only the bench's own files: the directory may hold other things of the user's.
    """
    report_dir.mkdir(parents=True, exist_ok=True)
    for name in ("results.jsonl", "junit.xml", "summary.md", HTML_NAME):
        (report_dir / name).unlink(missing_ok=True)
    shutil.rmtree(report_dir / "artifacts", ignore_errors=True)
