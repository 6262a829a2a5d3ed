"""The throughput benchmark keeps its instruments apart from the data path: the agents it
launches run on CPU 0, the rig's processes (real ones here) on the other CPUs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks.data_path import instruments_apart


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]


@dataclass
class FakeRig:
    """What ``instruments_apart`` reads of a rig: its processes."""

    procs: dict[str, Proc] = field(default_factory=dict)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: nothing to keep apart")
def test_instruments_run_on_cpu_0_and_the_data_path_on_the_others() -> None:
    cpus = os.sched_getaffinity(0)
    first = min(cpus)
    # a data path process with a child of its own (as `ip netns exec` may leave one)
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run(['sleep', '30'])"]
    )
    rig = FakeRig({"nic": Proc(parent)})
    try:
        children: list[str] = []
        listing = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
        deadline = time.monotonic() + 10.0
        while not (children := listing.read_text().split()):  # the child starts in moments
            assert time.monotonic() < deadline, "the data path process never started its child"
            time.sleep(0.01)
        with instruments_apart(rig):  # type: ignore[arg-type]
            assert os.sched_getaffinity(0) == {first}
            launched = subprocess.run(
                [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                capture_output=True,
                text=True,
                check=True,
            )
            assert launched.stdout.strip() == str([first]), "an instrument left CPU 0"
            for pid in (parent.pid, int(children[0])):
                assert os.sched_getaffinity(pid) == cpus - {first}
        assert os.sched_getaffinity(0) == cpus, "the benchmark's own CPUs were not restored"
    finally:
        for child in children:
            os.kill(int(child), 15)
        parent.wait(timeout=10)


def test_a_rig_without_processes_only_moves_the_instruments() -> None:
    cpus: Any = os.sched_getaffinity(0)
    with instruments_apart(FakeRig()):  # type: ignore[arg-type]
        assert os.sched_getaffinity(0) <= cpus
    assert os.sched_getaffinity(0) == cpus
