"""Fixtures for lab tests: controllers started as subprocesses are always stopped."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.labkit import REPO


@pytest.fixture
def spawn_cli() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``npabench ARGS`` in the background; it is killed at teardown if still running."""
    started: list[subprocess.Popen[str]] = []

    def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.cli", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
