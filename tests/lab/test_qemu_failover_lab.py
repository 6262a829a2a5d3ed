"""The QEMU backend end to end: `npabench run` on ``topologies/qemu-failover.yaml``.

Real QEMU guests (TCG where KVM does not answer) booted on emulated hosts over SSH,
the whole conformance suite run against them (what does not apply skips with its
reason), the report written, and nothing left behind: no QEMU, TAP, namespace or
socket of the lab survives the run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.qemu.accel import QEMU_BINARY
from bench.results import read_results
from tests.labkit import REPO, leftovers, npabench

TOPOLOGY = REPO / "topologies" / "qemu-failover.yaml"
IMAGE = REPO / "build" / "qemu-failover-guest" / "initrd.img"

#: The Q scenarios of the catalogue that must have run, and passed, on this backend.
MUST_PASS = {
    "DP-02", "DP-07", "DP-10", "FB-01", "FB-02", "FB-05", "FB-06",
    "LM-01", "LM-03", "LM-04", "LM-05", "LM-06", "LM-07", "LM-09", "LM-10",
}  # fmt: skip


def test_conformance_on_real_qemu_guests_then_nothing_left(tmp_path: Path) -> None:
    if shutil.which(QEMU_BINARY) is None:
        pytest.skip(f"no {QEMU_BINARY}: run `make qemu`")
    if not IMAGE.is_file():
        pytest.skip("no failover guest image: run `make qemu-failover-image`")
    report = tmp_path / "report"
    # the QEMU igb host's PF-control variants do not depend on the topology: the session
    # of `make test` runs them; booting that host again here would only cost time
    done = npabench(
        "run", str(TOPOLOGY), "--report", str(report), "--no-history", "-k", "not qemu-igb",
        timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = read_results(report / "results.jsonl")
    passed = {c for r in results if r.outcome == "passed" for c in r.catalogue}
    assert passed >= MUST_PASS, f"not passed: {sorted(MUST_PASS - passed)}"
    skipped = {r.nodeid: r.message for r in results if r.outcome == "skipped"}
    fb02 = [r for r in results if "fb02_surprise_removal_is_not_possible" in r.nodeid]
    assert fb02 and fb02[0].outcome == "passed", skipped
    assert (report / "report.html").is_file()
    assert leftovers("qfo") == []
