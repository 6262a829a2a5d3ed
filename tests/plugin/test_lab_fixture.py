"""The ``lab`` fixture tears down what it brought up, even if closing fails, unshaken by signals.

No lab is made here: the plugin's bring-up and teardown are replaced by fakes.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

import bench.pytest_plugin as plugin
import bench.signals
from bench.results import read_results
from tests.plugin.conftest import RunBench

pytest_plugins = ["pytester"]


class _FakeLab:
    def __init__(self) -> None:
        self.state = "the-state"
        self.log_dir: Path | None = None

    def close(self) -> None:
        raise RuntimeError("close broke")


class _NoState:
    @staticmethod
    def load(lab: str) -> None:
        return None


@pytest.fixture
def torn_down(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, bool]]:
    """The teardowns the plugin asks for: (state, whether SIGINT and SIGTERM were held)."""
    calls: list[tuple[Any, bool]] = []

    def fake_tear_down(state: Any, progress: Any) -> list[str]:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        calls.append((state, {signal.SIGINT, signal.SIGTERM} <= held))
        return []

    monkeypatch.setattr(plugin, "LabState", _NoState)
    monkeypatch.setattr(plugin, "bring_up_topology", lambda topology, path: _FakeLab())
    monkeypatch.setattr(plugin, "tear_down", fake_tear_down)
    return calls


def test_tear_down_runs_shielded_even_when_close_raises(
    run_bench: RunBench, pytester: pytest.Pytester, torn_down: list[tuple[Any, bool]]
) -> None:
    run = run_bench("def test_uses_lab(lab):\n    assert lab.state == 'the-state'\n")
    run.assert_outcomes(passed=1, errors=1)
    assert torn_down == [("the-state", True)], "torn down once, with the signals held"
    held = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert signal.SIGINT not in held and signal.SIGTERM not in held, "signals released after"
    (result,) = read_results(pytester.path / "results.jsonl")
    assert result.outcome == "error" and "close broke" in result.message


def test_sigterm_is_turned_into_keyboard_interrupt(run_bench: RunBench) -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        run_bench("def test_a():\n    pass\n", None).assert_outcomes(passed=1)
        assert signal.getsignal(signal.SIGTERM) is bench.signals._interrupt
    finally:
        signal.signal(signal.SIGTERM, previous)
