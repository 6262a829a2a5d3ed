"""A controller killed with SIGKILL leaves a lab behind; ``npabench cleanup`` removes all of it."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

from bench.lab.state import state_root
from tests.labkit import leftovers, npabench, pid_alive, wait_for, write_topology


def _journal(lab: str) -> dict | None:
    try:
        return json.loads((state_root() / lab / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_cleanup_after_sigkill_during_up(tmp_path: Path, spawn_cli) -> None:
    path, name = write_topology(tmp_path, hosts=8)
    controller = spawn_cli("up", str(path))
    # Kill as soon as the first sshd exists: namespaces and links are half made.
    journal = wait_for(
        lambda: (j := _journal(name)) and any(r["kind"] == "process" for r in j["resources"]) and j,
        timeout=60,
        what="the first sshd in the journal",
    )
    controller.send_signal(signal.SIGKILL)
    controller.communicate()
    assert journal["status"] == "starting", "the kill must land in the middle of bring-up"
    pids = [r["pid"] for r in journal["resources"] if r["kind"] == "process"]
    assert leftovers(name) != [], "the killed controller left its lab behind"

    done = npabench("cleanup", name)
    assert done.returncode == 0, done.stderr
    assert leftovers(name, pids) == []


def test_cleanup_after_sigkill_during_run(tmp_path: Path, spawn_cli) -> None:
    """The run's pytest child must die with the controller, and cleanup takes the rest."""
    path, name = write_topology(tmp_path, hosts=2)
    gate = tmp_path / "started"
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_blocks.py").write_text(
        "import os, time, pathlib\n"
        "def test_blocks(lab):\n"
        f"    pathlib.Path({str(gate)!r}).write_text(str(os.getpid()))\n"
        "    deadline = time.monotonic() + 120\n"
        "    while time.monotonic() < deadline:\n"
        "        time.sleep(0.05)\n"
    )
    controller = spawn_cli("run", str(path), "--suite", str(suite), "--report", str(tmp_path / "r"))
    wait_for(gate.exists, timeout=90, what="the suite to start")
    child = int(wait_for(lambda: gate.read_text().strip(), timeout=5, what="the pytest pid"))
    pids = [r["pid"] for r in _journal(name)["resources"] if r["kind"] == "process"]
    controller.send_signal(signal.SIGKILL)
    controller.communicate()
    wait_for(lambda: not pid_alive(child), 10, "pytest to die")

    done = npabench("cleanup", name)
    assert done.returncode == 0, done.stderr
    assert f"namespace npa-{name}-h0" in done.stdout
    assert leftovers(name, [*pids, child]) == []


def test_cleanup_without_names_finds_a_lab_whose_journal_is_gone(tmp_path: Path) -> None:
    path, name = write_topology(tmp_path, hosts=2)
    npabench("up", str(path), check=True)
    shutil.rmtree(state_root() / name)  # the journal is lost; namespaces, links, sshds remain
    assert leftovers(name) != []
    # The scan finds it by its marks (namespaces, links), not by a journal.
    found = npabench("cleanup", "--list", check=True)
    assert f"{name}: no journal: leftovers of a lost lab" in found.stdout.splitlines()
    assert leftovers(name) != [], "--list removes nothing"
    done = npabench("cleanup", name)
    assert done.returncode == 0, done.stderr
    assert f"namespace npa-{name}-h0" in done.stdout
    assert leftovers(name) == []


def test_cleanup_leaves_a_lab_in_use_alone_unless_forced(tmp_path: Path, spawn_cli) -> None:
    path, name = write_topology(tmp_path, hosts=1)
    gate = tmp_path / "started"
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_waits.py").write_text(
        "import pathlib, time\n"
        "def test_waits(lab):\n"
        f"    pathlib.Path({str(gate)!r}).touch()\n"
        "    deadline = time.monotonic() + 120\n"
        "    while time.monotonic() < deadline:\n"
        "        time.sleep(0.05)\n"
    )
    spawn_cli("run", str(path), "--suite", str(suite), "--report", str(tmp_path / "r"))
    wait_for(gate.exists, timeout=90, what="the run to be under way")
    listed = npabench("cleanup", "--list", check=True)
    assert any(
        line.startswith(f"{name}: up, in use by process") for line in listed.stdout.splitlines()
    ), listed.stdout
    refused = npabench("cleanup", name)
    assert refused.returncode == 2
    assert "still in use" in refused.stderr and name in refused.stderr
    assert leftovers(name) != [], "a lab in use must not be torn down"
    forced = npabench("cleanup", "--force", name)
    assert forced.returncode == 0, forced.stderr
    assert leftovers(name) == []
