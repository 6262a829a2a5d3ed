"""The bench's pytest plugin: ``--topology FILE`` turns a test run into a lab run.

Fixtures: ``topology``, ``limits``, ``lab`` (session; attaches to a lab that
is already up, else brings one up and tears it down at the end), ``hosts``
(name -> connected SSH driver), ``artifacts`` (a directory per test),
``record_timeline`` (a timeline dict -> ``timeline-<n>.json`` in the artifacts,
listed in the result; ``bench.report.timeline`` has the contract),
``record_figure`` (a named number the run's history compares), ``step`` (names
the step a test is at, for the live progress view).
Markers: ``requires("hosts:3", "instrument:power-supply", ...)`` skips unless
the lab provides every capability named (``bench.capabilities``: the topology
must declare it *and* its backends must realise it; an unknown capability is
a collection error); ``catalogue("DP-02")`` ties a test to the conformance
catalogue. ``--results`` gets a run header, then one record per finished test
(its setup/call/teardown folded, the worst outcome winning). ``--progress FILE``
streams progress events (``bench.live.events``) and ``--step-gate FILE`` makes
the run pause for an answer before each test and after a failure (bring-up).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench import __version__
from bench.capabilities import KNOWN_FORMS, is_known, unmet
from bench.errors import BenchError
from bench.lab import Lab, LabState, attach, bring_up_topology
from bench.lab.teardown import tear_down
from bench.live.events import EventWriter
from bench.live.pytest_events import ProgressEvents
from bench.live.step_gate import StepGate
from bench.report.timeline import figure_names, write_timeline
from bench.results import ResultWriter, RunHeader, TestResult
from bench.signals import shielded, sigterm_interrupts
from bench.ssh import SshHost
from bench.topology import Limits, Topology, load_topology

_TOPOLOGY = pytest.StashKey[Topology | None]()
_ARTIFACTS = pytest.StashKey[Path]()
_PROGRESS = pytest.StashKey[ProgressEvents | None]()
#: user_properties keys: a timeline file, and a figure (``figure:<name>``).
TIMELINE_PROPERTY = "timeline"
FIGURE_PREFIX = "figure:"
#: A failed phase's full report (traceback, captured output), in the test's artifacts.
FAILURE_FILE = "failure-{when}.txt"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("npabench", "NPA Bench")
    group.addoption("--topology", default=None, metavar="FILE", help="topology file of the lab")
    group.addoption("--results", default=None, metavar="FILE", help="append results (JSON lines)")
    group.addoption("--artifacts", default=None, metavar="DIR", help="per-test artifacts root")
    group.addoption(
        "--progress", default=None, metavar="FILE", help="stream progress events (JSON lines)"
    )
    group.addoption(
        "--step-gate",
        default=None,
        metavar="FILE",
        help="bring-up: before each test and after a failure, wait for a line from FILE "
        "(run, skip, quit); needs --progress",
    )


def pytest_configure(config: pytest.Config) -> None:
    # A nightly job stopped with SIGTERM must not leave its lab behind: unwind like Ctrl-C.
    sigterm_interrupts()
    config.addinivalue_line("markers", "requires(*caps): capabilities the lab must provide")
    config.addinivalue_line("markers", "catalogue(*ids): conformance catalogue scenario IDs")
    path = config.getoption("--topology")
    try:
        config.stash[_TOPOLOGY] = load_topology(path) if path else None
    except BenchError as err:
        raise pytest.UsageError(str(err)) from None
    artifacts = config.getoption("--artifacts")
    config.stash[_ARTIFACTS] = Path(artifacts or config.rootpath / "report" / "artifacts")
    progress = _register_progress(config)
    results = config.getoption("--results")
    if results:
        topo = config.stash[_TOPOLOGY]
        header = RunHeader(
            topology=str(Path(path).resolve()) if path else "",
            lab=topo.lab.name if topo is not None else "",
            bench_version=__version__,
        )
        recorder = ResultRecorder(ResultWriter(Path(results)), config.stash[_ARTIFACTS], header)
        if progress is not None:
            recorder.on_result = progress.finished
        config.pluginmanager.register(recorder, "npabench-results")


def _register_progress(config: pytest.Config) -> ProgressEvents | None:
    """The live progress channel and the bring-up gate, when the controller asked for them."""
    path, gate = config.getoption("--progress"), config.getoption("--step-gate")
    if gate and not path:
        raise pytest.UsageError("--step-gate needs --progress (the prompt goes there)")
    progress = ProgressEvents(EventWriter(Path(path))) if path else None
    config.stash[_PROGRESS] = progress
    if progress is not None:
        config.pluginmanager.register(progress, "npabench-progress")
        if gate:
            step_gate = StepGate(progress.writer, Path(gate), progress)
            config.pluginmanager.register(step_gate, "npabench-step-gate")
    return progress


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A ``requires`` naming an unknown capability fails the collection of its test's parent."""
    report = yield
    if not report.passed:
        return report
    bad = [
        f"{item.nodeid}: unknown capability {cap!r} in @pytest.mark.requires"
        for item in report.result
        if isinstance(item, pytest.Item)
        for cap in _required(item)
        if not is_known(cap)
    ]
    if not bad:
        return report
    longrepr = "\n".join([*bad, f"known capabilities: {', '.join(KNOWN_FORMS)}"])
    return pytest.CollectReport(report.nodeid, "failed", longrepr, [])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    topology = config.stash[_TOPOLOGY]
    for item in items:
        # Catalogue IDs travel with every report (and into JUnit XML as properties).
        item.user_properties += [("catalogue", i) for i in _catalogue_ids(item)]
        required = _required(item)
        if not required:
            continue
        if topology is None:
            item.add_marker(pytest.mark.skip(reason="needs a lab: no --topology given"))
            continue
        reason = unmet(topology, required)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def _required(item: pytest.Item) -> list[str]:
    """Every capability the test's ``requires`` markers name (function, class and module)."""
    return list(dict.fromkeys(a for m in item.iter_markers("requires") for a in m.args))


def _catalogue_ids(item: pytest.Item) -> tuple[str, ...]:
    return tuple(str(a) for m in item.iter_markers("catalogue") for a in m.args)


# -- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def topology(pytestconfig: pytest.Config) -> Topology:
    """The loaded topology (skips the test when no --topology was given)."""
    topo = pytestconfig.stash[_TOPOLOGY]
    if topo is None:
        pytest.skip("needs a lab: no --topology given")
    return topo


@pytest.fixture(scope="session")
def limits(topology: Topology) -> Limits:
    """Pass/fail thresholds from the topology's ``limits:`` section."""
    return topology.limits


@pytest.fixture(scope="session")
def lab(pytestconfig: pytest.Config, topology: Topology) -> Iterator[Lab]:
    """The running lab: attached if already up, else brought up here and torn down after."""
    path = Path(pytestconfig.getoption("--topology"))
    state = LabState.load(topology.lab.name)
    owned = state is None
    the_lab = bring_up_topology(topology, path) if owned else attach(path)
    the_lab.log_dir = pytestconfig.stash[_ARTIFACTS] / "hosts"
    try:
        yield the_lab
    finally:
        try:
            the_lab.close()
        finally:
            if owned:
                # A second Ctrl-C or a SIGTERM waits until the lab is gone.
                with shielded():
                    tear_down(the_lab.state, lambda _: None)


@pytest.fixture(scope="session")
def hosts(lab: Lab) -> dict[str, SshHost]:
    """Every host of the lab, connected over SSH, by name."""
    return {h.endpoint.host: h for h in lab.hosts()}


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """A fresh directory for this test's artifacts (logs, captures)."""
    path = artifacts_dir(request.config.stash[_ARTIFACTS], request.node.nodeid)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def record_timeline(
    request: pytest.FixtureRequest, artifacts: Path
) -> Callable[[dict[str, Any]], Path]:
    """``record_timeline(timeline) -> Path``: check the dict against the timeline contract
    (``bench.report.timeline``; a malformed one raises naming the key), write it as
    ``timeline-<n>.json`` in the test's artifacts and list it (and its figures) in the
    test's result, where the report draws it and the history compares its figures."""

    def record(timeline: dict[str, Any]) -> Path:
        path = write_timeline(artifacts, timeline)
        request.node.user_properties.append((TIMELINE_PROPERTY, str(path)))
        for name, value in figure_names(timeline).items():
            request.node.user_properties.append((FIGURE_PREFIX + name, value))
        return path

    return record


@pytest.fixture
def record_figure(request: pytest.FixtureRequest) -> Callable[[str, float], None]:
    """``record_figure(name, value)``: a number this test measured (a blackout in ms, a
    rate in pps), kept in the result and compared between runs by ``npabench compare``."""

    def record(name: str, value: float) -> None:
        if not isinstance(name, str) or not name:
            raise BenchError(f"record_figure: the name must be a non-empty string, got {name!r}")
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value):
            raise BenchError(f"record_figure({name!r}): must be a finite number, got {value!r}")
        request.node.user_properties.append((FIGURE_PREFIX + name, float(value)))

    return record


@pytest.fixture
def step(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """``step("switch to emulation")``: show the step this test is at in the live progress
    view of ``npabench run`` (no effect without it)."""
    progress = pytestconfig.stash.get(_PROGRESS, None)
    return progress.step if progress is not None else lambda _: None


@pytest.fixture(scope="session", autouse=True)
def _junit_properties(
    pytestconfig: pytest.Config, record_testsuite_property: Callable[[str, object], None]
) -> None:
    record_testsuite_property("bench_version", __version__)
    topo = pytestconfig.stash[_TOPOLOGY]
    if topo is not None:
        record_testsuite_property("topology", str(pytestconfig.getoption("--topology")))
        record_testsuite_property("lab", topo.lab.name)


# -- results -----------------------------------------------------------------------


def artifacts_dir(root: Path, nodeid: str) -> Path:
    """Where the artifacts of test ``nodeid`` go."""
    return root / re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")


#: How bad each outcome is: across setup/call/teardown the worst wins (ties: the first).
_RANK = {"passed": 0, "xpassed": 1, "skipped": 2, "xfailed": 2, "failed": 3, "error": 3}


def _outcome(report: pytest.TestReport) -> str:
    xfail = hasattr(report, "wasxfail")
    if report.failed:  # a strict XPASS is reported failed, and recorded so
        return "failed" if report.when == "call" else "error"
    if report.skipped:
        return "xfailed" if xfail else "skipped"
    return "xpassed" if xfail else "passed"


def _message(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail") and not report.failed:
        return str(report.wasxfail)  # the xfail reason
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None:
            return f"{crash.message} ({crash.path}:{crash.lineno})"
        return report.longreprtext.strip().splitlines()[-1] if report.longreprtext else ""
    return ""


class ResultRecorder:
    """Folds each test's setup/call/teardown reports into one result and appends it at once.

    The worst outcome wins (error/failed > skipped/xfailed > xpassed > passed), and
    among equals the first, with its message: a test skipped in setup whose
    teardown fails is an error; a failed call keeps its outcome and message over a
    later teardown error. The run's header is written when the recorder is made.
    """

    def __init__(self, writer: ResultWriter, artifacts_root: Path, header: RunHeader) -> None:
        self.writer = writer
        self.artifacts_root = artifacts_root
        self._pending: dict[str, TestResult] = {}
        #: Told of every result once it is on disk (the live progress view).
        self.on_result: Callable[[TestResult], None] | None = None
        writer.start(header)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        previous = self._pending.get(report.nodeid)
        outcome, message = _outcome(report), _message(report)
        if previous is not None and _RANK[previous.outcome] >= _RANK[outcome]:
            outcome, message = previous.outcome, previous.message
        catalogue = tuple(str(v) for k, v in report.user_properties if k == "catalogue")
        duration = report.duration + (previous.duration if previous else 0.0)
        result = TestResult(report.nodeid, outcome, duration, catalogue, message)
        self._pending[report.nodeid] = result
        if report.failed and report.longreprtext:
            # The whole story (traceback, captured output) for the report to show.
            folder = artifacts_dir(self.artifacts_root, report.nodeid)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / FAILURE_FILE.format(when=report.when)).write_text(report.longreprtext)
        if report.when == "teardown":
            del self._pending[report.nodeid]
            folder = artifacts_dir(self.artifacts_root, report.nodeid)
            timelines, figures = _recorded(report.user_properties)
            result = replace(
                result,
                artifacts=str(folder) if folder.exists() else "",
                timelines=timelines,
                figures=figures,
            )
            self.writer.append(result)
            if self.on_result is not None:
                self.on_result(result)


def _recorded(properties: list[tuple[str, object]]) -> tuple[tuple[str, ...], dict[str, float]]:
    """The timelines and figures a test recorded, from its report's user properties."""
    timelines = tuple(str(v) for k, v in properties if k == TIMELINE_PROPERTY)
    figures = {
        k.removeprefix(FIGURE_PREFIX): float(v)  # type: ignore[arg-type]
        for k, v in properties
        if k.startswith(FIGURE_PREFIX)
    }
    return timelines, figures
