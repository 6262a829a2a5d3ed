"""Bring-up mode, the pytest child's side: wait for the user before each test and after a
failure (``npabench run --step``).

The child cannot talk to the user itself (its output is the controller's to
show, its stdin is pytest's), so it announces the next test (``before``) or a
failure (``failed``) on the progress channel and reads the user's answer from
the gate (``/dev/fd/N`` from the controller): ``run``, ``skip`` or ``quit``.
While it waits, the lab stays exactly as the test left it: after a failure the
test's own teardown (its undo steps) has not run yet.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from bench.live.events import QUIT, RUN, SKIP, EventWriter
from bench.live.pytest_events import ProgressEvents

#: Why a test the user skipped at the prompt did not run.
SKIPPED_AT_PROMPT = "skipped at the bring-up prompt (npabench run --step)"
STOPPED_AT_PROMPT = "the user stopped the run at the bring-up prompt"


class StepGate:
    """pytest hooks that pause before every test and after every failure."""

    def __init__(self, writer: EventWriter, gate: Path, progress: ProgressEvents) -> None:
        self.writer = writer
        self.gate = gate.open("r")
        self.progress = progress
        self.session: pytest.Session | None = None

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session

    def _answer(self) -> str:
        """The user's answer; the controller gone (end of file) means stop."""
        line = self.gate.readline()
        if not line:
            return QUIT
        return line.strip() or RUN

    def _stop(self) -> None:
        if self.session is not None:
            self.session.shouldstop = STOPPED_AT_PROMPT

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        doc = inspect.getdoc(getattr(item, "obj", None)) or ""
        catalogue = [str(a) for m in item.iter_markers("catalogue") for a in m.args]
        self.writer.emit(
            "before",
            nodeid=item.nodeid,
            index=self.progress.index,
            total=self.progress.total,
            catalogue=catalogue,
            doc=doc,
        )
        answer = self._answer()
        if answer == QUIT:
            self._stop()
            pytest.skip(STOPPED_AT_PROMPT)
        if answer == SKIP:
            pytest.skip(SKIPPED_AT_PROMPT)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.failed or report.when == "teardown":
            return
        crash = getattr(report.longrepr, "reprcrash", None)
        message = crash.message if crash is not None else report.longreprtext[-500:]
        self.writer.emit("failed", nodeid=report.nodeid, when=report.when, message=message)
        if self._answer() == QUIT:
            self._stop()

    def pytest_unconfigure(self) -> None:
        self.gate.close()
