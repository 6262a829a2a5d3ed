"""The bench's pytest plugin: ``--topology FILE`` turns a test run into a lab run.

Fixtures: ``topology``, ``limits``, ``lab`` (session; attaches to a lab that
is already up, else brings one up and tears it down at the end), ``hosts``
(name -> connected SSH driver), ``artifacts`` (a directory per test).
Markers: ``requires("hosts:3", "instrument:power-supply", ...)`` skips with
the missing capabilities named; ``catalogue("DP-02")`` ties a test to the
conformance catalogue. Each finished test is appended to ``--results``.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType

import pytest

from bench import __version__
from bench.errors import BenchError
from bench.lab import Lab, LabState, attach, bring_up_topology
from bench.lab.teardown import tear_down
from bench.results import ResultWriter, TestResult
from bench.ssh import SshHost
from bench.topology import Limits, Topology, load_topology

_TOPOLOGY = pytest.StashKey[Topology | None]()
_ARTIFACTS = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("npabench", "NPA Bench")
    group.addoption("--topology", default=None, metavar="FILE", help="topology file of the lab")
    group.addoption("--results", default=None, metavar="FILE", help="append results (JSON lines)")
    group.addoption("--artifacts", default=None, metavar="DIR", help="per-test artifacts root")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwind like Ctrl-C, so the lab fixture tears down


def pytest_configure(config: pytest.Config) -> None:
    # A nightly job stopped with SIGTERM must not leave its lab behind.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    config.addinivalue_line("markers", "requires(*caps): capabilities the topology must offer")
    config.addinivalue_line("markers", "catalogue(*ids): conformance catalogue scenario IDs")
    path = config.getoption("--topology")
    try:
        config.stash[_TOPOLOGY] = load_topology(path) if path else None
    except BenchError as err:
        raise pytest.UsageError(str(err)) from None
    artifacts = config.getoption("--artifacts")
    config.stash[_ARTIFACTS] = Path(artifacts or config.rootpath / "report" / "artifacts")
    results = config.getoption("--results")
    if results:
        recorder = ResultRecorder(ResultWriter(Path(results)), config.stash[_ARTIFACTS])
        config.pluginmanager.register(recorder, "npabench-results")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    topology = config.stash[_TOPOLOGY]
    for item in items:
        # Catalogue IDs travel with every report (and into JUnit XML as properties).
        item.user_properties += [("catalogue", i) for i in _catalogue_ids(item)]
        marker = item.get_closest_marker("requires")
        if marker is None:
            continue
        if topology is None:
            item.add_marker(pytest.mark.skip(reason="needs a lab: no --topology given"))
            continue
        missing = [cap for cap in marker.args if cap not in topology.capabilities()]
        if missing:
            reason = f"topology lab {topology.lab.name!r} lacks {', '.join(missing)}"
            item.add_marker(pytest.mark.skip(reason=reason))


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
        the_lab.close()
        if owned:
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


def _outcome(report: pytest.TestReport) -> str:
    if report.failed:
        return "failed" if report.when == "call" else "error"
    return "skipped" if report.skipped else "passed"


def _message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None:
            return f"{crash.message} ({crash.path}:{crash.lineno})"
        return report.longreprtext.strip().splitlines()[-1] if report.longreprtext else ""
    return ""


class ResultRecorder:
    """Folds each test's setup/call/teardown reports into one result and appends it at once."""

    def __init__(self, writer: ResultWriter, artifacts_root: Path) -> None:
        self.writer = writer
        self.artifacts_root = artifacts_root
        self._pending: dict[str, TestResult] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        previous = self._pending.get(report.nodeid)
        outcome, message = _outcome(report), _message(report)
        if previous is not None and previous.outcome != "passed":
            outcome, message = previous.outcome, previous.message  # first failure wins
        catalogue = tuple(str(v) for k, v in report.user_properties if k == "catalogue")
        duration = report.duration + (previous.duration if previous else 0.0)
        result = TestResult(report.nodeid, outcome, duration, catalogue, message)
        self._pending[report.nodeid] = result
        if report.when == "teardown":
            del self._pending[report.nodeid]
            folder = artifacts_dir(self.artifacts_root, report.nodeid)
            self.writer.append(replace(result, artifacts=str(folder) if folder.exists() else ""))
