"""Helpers for the plugin tests: each runs a small suite in-process under pytester.

``pytester`` itself is enabled by each test module (``pytest_plugins`` is only
allowed in the rootdir's conftest.py, and the suite must also run from there).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
EMULATED = REPO / "topologies" / "emulated-lab.yaml"
#: The emulated lab plus NICs with VFs, a power supply and a guest.
FULL = REPO / "tests" / "topology" / "good" / "full-emulated.yaml"
#: Real lab hosts: their SR-IOV NICs are declared, not provided by the bench yet.
REAL = REPO / "topologies" / "example-real-lab.yaml"

RunBench = Callable[..., pytest.RunResult]


@pytest.fixture
def run_bench(pytester: pytest.Pytester) -> RunBench:
    """Run ``suite`` (a test module's source) under the bench plugin, writing results.jsonl.

    ``topology`` is a topology file copied next to the suite, or None for no --topology.
    """

    def run(suite: str, topology: Path | None = EMULATED, *args: str) -> pytest.RunResult:
        pytester.makepyfile(test_suite=suite)
        argv = ["-p", "bench.pytest_plugin", "--results", str(pytester.path / "results.jsonl")]
        argv += ["--artifacts", str(pytester.path / "artifacts")]
        if topology is not None:
            copy = pytester.path / "topology.yaml"
            shutil.copy(topology, copy)
            argv += ["--topology", str(copy)]
        return pytester.runpytest(*argv, *args)

    return run
