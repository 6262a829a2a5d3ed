"""Live migration on labs of its own: the ``migrate`` command end to end, and the LM
conformance scenarios the default lab cannot express, on ``topologies/migration-lab.yaml``.

Real processes throughout: the CLI in a separate process, two device processes per
migration, the stream over TCP on the management network, the guest's shell moving
between them; then ``down`` must leave nothing, including what the migrations started.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.results import read_results
from tests.labkit import REPO, leftovers, npabench, recorded_pids, write_topology

ALPHA = {"name": "nic0", "model": "alpha-10g", "vfs": 2}
BETA = {"name": "nic0", "model": "beta-25g", "vfs": 2}


def test_migrate_command_under_traffic_then_down_leaves_nothing(tmp_path: Path) -> None:
    path, name = write_topology(tmp_path, hosts=3, nics={"h1": [ALPHA], "h2": [BETA]}, guests=1)
    up = npabench("up", str(path))
    assert up.returncode == 0, up.stderr
    first = recorded_pids(name)
    try:
        moved = npabench("migrate", str(path), "vm1", "h2", "--traffic", "--json")
        assert moved.returncode == 0, moved.stdout[-3000:] + moved.stderr
        report = json.loads(moved.stdout)
        assert report["verdict"]["passed"], report["verdict"]
        assert report["result"]["outcome"] == "completed"
        assert (report["result"]["host"], report["result"]["plugin"]) == ("h2", "beta")
        assert report["switch_port"] == ["h2", "uplink0"]
        assert report["figures"]["downtime_ms"] > 0
        assert {w["name"] for w in report["wire"]} == {"h0 -> vm1", "vm1 -> h0"}
        status = json.loads(npabench("status", str(path), "--json", check=True).stdout)
        (guest,) = status["guests"]
        assert (guest["host"], guest["mode"], guest["plugin"]) == ("h2", "passthrough", "beta")
        text = npabench("migrate", str(path), "vm1", "h1", check=True).stdout
        assert "stop-and-copy-start" in text and "verdict: PASS" in text
        again = npabench("migrate", str(path), "vm1", "h1")
        assert again.returncode == 2 and "already runs on h1" in again.stderr
        nowhere = npabench("migrate", str(path), "vm1", "h7")
        assert nowhere.returncode == 2 and "no host 'h7'" in nowhere.stderr
        generator = npabench("migrate", str(path), "vm1", "h0")
        assert generator.returncode == 2 and "not a hypervisor" in generator.stderr
    finally:
        down = npabench("down", str(path))
    assert down.returncode == 0, down.stderr
    assert leftovers(name, first) == []


def test_lm_scenarios_of_the_migration_lab(tmp_path: Path) -> None:
    """LM-01 (same vendor), LM-07 across three vendors and LM-10 (no plugin support) need
    hosts the default lab lacks: they run, and pass, on the migration lab."""
    report = tmp_path / "report"
    keyword = "lm_01 or three_vendors or lm_10 or lm_03"
    done = npabench(
        "run", str(REPO / "topologies" / "migration-lab.yaml"), "--report", str(report),
        "--no-history", "-k", keyword, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = {r.nodeid.rsplit("::", 1)[1]: r for r in read_results(report / "results.jsonl")}
    wanted = {
        "test_lm_01_same_vendor": "LM-01",
        "test_lm_03_no_vf_at_destination": "LM-03",
        "test_lm_07_across_three_vendors": "LM-07",
        "test_lm_10_guest_without_plugin_support": "LM-10",
    }
    for test, catalogue in wanted.items():
        assert test in results, f"{test} did not run: {sorted(results)}"
        assert results[test].outcome == "passed", (test, results[test].message)
        assert catalogue in results[test].catalogue
    assert leftovers("mlab") == []
