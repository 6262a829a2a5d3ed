"""The bench's pytest plugin: ``--topology FILE`` turns a test run into a lab run.

Fixtures: ``topology``, ``limits``, ``lab`` (session; attaches to a lab that
is already up, else brings one up and tears it down at the end), ``hosts``
(name -> connected SSH driver), ``artifacts`` (a directory per test).
Markers: ``requires("hosts:3", "instrument:power-supply", ...)`` skips unless
the lab provides every capability named (``bench.capabilities``: the topology
must declare it *and* its backends must realise it; an unknown capability is
a collection error); ``catalogue("DP-02")`` ties a test to the conformance
catalogue. ``--results`` gets a run header, then one record per finished test
(its setup/call/teardown folded, the worst outcome winning).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bench import __version__
from bench.capabilities import KNOWN_FORMS, is_known, unmet
from bench.errors import BenchError
from bench.lab import Lab, LabState, attach, bring_up_topology
from bench.lab.teardown import tear_down
from bench.results import ResultWriter, RunHeader, TestResult
from bench.signals import shielded, sigterm_interrupts
from bench.ssh import SshHost
from bench.topology import Limits, Topology, load_topology

_TOPOLOGY = pytest.StashKey[Topology | None]()
_ARTIFACTS = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("npabench", "NPA Bench")
    group.addoption("--topology", default=None, metavar="FILE", help="topology file of the lab")
    group.addoption("--results", default=None, metavar="FILE", help="append results (JSON lines)")
    group.addoption("--artifacts", default=None, metavar="DIR", help="per-test artifacts root")


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
    results = config.getoption("--results")
    if results:
        topo = config.stash[_TOPOLOGY]
        header = RunHeader(
            topology=str(Path(path).resolve()) if path else "",
            lab=topo.lab.name if topo is not None else "",
            bench_version=__version__,
        )
        recorder = ResultRecorder(ResultWriter(Path(results)), config.stash[_ARTIFACTS], header)
        config.pluginmanager.register(recorder, "npabench-results")


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
        if report.when == "teardown":
            del self._pending[report.nodeid]
            folder = artifacts_dir(self.artifacts_root, report.nodeid)
            self.writer.append(replace(result, artifacts=str(folder) if folder.exists() else ""))
