"""Live migration on labs of its own: the ``migrate`` command end to end, and the LM
conformance scenarios the default lab cannot express, on ``topologies/migration-lab.yaml``.

Real processes throughout: the CLI in a separate process, two device processes per
migration, the stream over TCP on the management network, the guest's shell moving
between them; then ``down`` must leave nothing, including what the migrations started.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.hypervisor import Hypervisor, hypervisor_for
from bench.lab import Lab, attach
from bench.results import read_results
from tests.labkit import REPO, leftovers, npabench, recorded_pids, wait_for, write_topology

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


def test_the_hypervisor_interface_on_the_emulated_backend(tmp_path: Path) -> None:
    """revoke/offer a VF, suspend/resume, stop/start a guest: each lands in the state the
    interface promises, seen from the device and from the NIC."""
    path, name = write_topology(tmp_path, hosts=2, nics={"h1": [ALPHA]}, guests=1)
    npabench("up", str(path), check=True)
    try:
        with attach(path) as lab:
            hv = hypervisor_for(lab)
            assert hv.host_of("vm1") == "h1"
            _wait_mode(hv, "passthrough")
            hv.revoke_vf("vm1", surprise=True)
            assert _wait_mode(hv, "emulation")["reason"].startswith("VF removed")
            hv.offer_vf("vm1")
            _wait_mode(hv, "passthrough")
            hv.suspend("vm1")
            assert _wait_mode(hv, "emulation")["reason"] == "guest suspended"
            hv.resume("vm1")
            _wait_mode(hv, "passthrough")
            hv.stop_guest("vm1")
            with lab.nic_control("h1", "nic0") as nic:
                owners = [vf["owner"] for vf in nic.call("STATUS")["vfs"]]
            assert "vm1" not in owners, owners
            assert not [r for r in lab.state.resources if r.name.endswith(" vm1") and
                        r.name.split()[0] in ("vmxnet3", "shell")]  # fmt: skip
            hv.start_guest("vm1")
            _wait_mode(hv, "passthrough")
            ping = lab.host("vm1").run("ping -c 2 -i 0.2 -W 2 " + _generator_address(lab))
            assert ping.exit_status == 0, ping.stdout + ping.stderr
            names = [e.name for e in hv.events("vm1")]
            assert "device-started" in names and "passthrough-active" in names
    finally:
        npabench("down", str(path), check=True)
    assert leftovers(name) == []


def _wait_mode(hv: Hypervisor, mode: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = hv.status("vm1")
        return status if status["mode"] == mode and not status["busy"] else None

    return wait_for(reached, 10, f"vm1 in {mode}")


def _generator_address(lab: Lab) -> str:
    return next(a for machine, _, a in lab.data_interfaces() if machine == "h0")
