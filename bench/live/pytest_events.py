"""The pytest child's side of the progress view: which test of how many, which phase.

Registered by the bench's pytest plugin when ``--progress FILE`` is given.
Finished tests are reported with the outcome the results file records (the
``ResultRecorder`` calls ``finished``), so the live view never disagrees with
the report.
"""

from __future__ import annotations

import pytest

from bench.live.events import EventWriter
from bench.results import TestResult


class ProgressEvents:
    """pytest hooks that emit ``collected``, ``start``, ``step`` and ``finished`` events."""

    def __init__(self, writer: EventWriter) -> None:
        self.writer = writer
        self.total = 0
        self.index = 0
        self.current = ""

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.total = len(session.items)
        self.writer.emit("collected", total=self.total)

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.index += 1
        self.current = nodeid
        self.writer.emit("start", nodeid=nodeid, index=self.index, total=self.total)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.step("setup")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        self.step("running")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        self.step("teardown")

    def step(self, text: str) -> None:
        """A step of the current test (a phase, or what a test names through ``step``)."""
        self.writer.emit("step", nodeid=self.current, text=text)

    def finished(self, result: TestResult) -> None:
        self.writer.emit(
            "finished",
            nodeid=result.nodeid,
            index=self.index,
            total=self.total,
            outcome=result.outcome,
            duration=round(result.duration, 3),
            message=result.message.splitlines()[0][:200] if result.message else "",
        )

    def pytest_unconfigure(self) -> None:
        self.writer.close()
