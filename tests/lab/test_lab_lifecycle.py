"""An emulated lab comes up with real sshds, is reachable every way a user reaches it, and
goes away without a trace."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.labkit import leftovers, npabench, recorded_pids, write_topology


@pytest.fixture
def running_lab(tmp_path: Path):
    path, name = write_topology(tmp_path, hosts=3)
    up = npabench("up", str(path))
    assert up.returncode == 0, up.stderr
    pids = recorded_pids(name)
    yield path, name, pids
    npabench("down", str(path))
    assert leftovers(name, pids) == []


def test_up_status_exec_and_down(tmp_path: Path) -> None:
    path, name = write_topology(tmp_path, hosts=2)
    up = npabench("up", str(path))
    assert up.returncode == 0, up.stderr
    pids = recorded_pids(name)
    assert len(pids) == 2, "one sshd per emulated host"

    status = json.loads(npabench("status", str(path), "--json", check=True).stdout)
    assert status["status"] == "up"
    assert [h["name"] for h in status["hosts"]] == ["h0", "h1"]
    assert all(h["sshd_running"] for h in status["hosts"])
    addresses = [h["ssh"]["address"] for h in status["hosts"]]
    assert len(set(addresses)) == 2

    # Each host is its own namespace: the command runs inside it.
    ran = npabench("exec", str(path), "h1", "--", "ip", "netns", "identify", "$$", check=True)
    assert ran.stdout.strip() == f"npa-{name}-h1"

    down = npabench("down", str(path))
    assert down.returncode == 0, down.stderr
    assert leftovers(name, pids) == []
    assert json.loads(npabench("status", str(path), "--json").stdout)["status"] == "down"


def test_exec_returns_the_remote_exit_status_and_fans_out(running_lab) -> None:
    path, _, _ = running_lab
    failed = npabench("exec", str(path), "h0", "--", "echo oops >&2; exit 7")
    assert failed.returncode == 7
    assert "oops" in failed.stderr
    every = npabench("exec", str(path), "all", "--", "ip -o -4 addr show dev uplink0", check=True)
    lines = every.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["h0", "h1", "h2"]


def test_ssh_config_works_with_openssh_client(running_lab, tmp_path: Path) -> None:
    path, name, _ = running_lab
    config = tmp_path / "lab.ssh"
    config.write_text(npabench("ssh-config", str(path), check=True).stdout)
    done = subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", "h2", "ip netns identify $$"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"npa-{name}-h2"


def test_second_up_of_the_same_lab_is_refused(running_lab) -> None:
    path, name, _ = running_lab
    again = npabench("up", str(path))
    assert again.returncode == 3
    assert f"lab {name!r} is already up" in again.stderr
    assert "Traceback" not in again.stderr


def test_up_refuses_a_management_network_in_use(running_lab, tmp_path: Path) -> None:
    path, _, _ = running_lab
    clash, clash_name = write_topology(tmp_path, hosts=1)
    text = clash.read_text()
    theirs = json.loads(npabench("status", str(path), "--json").stdout)["hosts"][0]["ssh"][
        "address"
    ]
    subnet = theirs.rsplit(".", 1)[0] + ".0/24"
    clash.write_text(re.sub(r"management: \S+", f"management: {subnet}", text))
    refused = npabench("up", str(clash))
    assert refused.returncode == 3
    assert f"overlaps route {subnet}" in refused.stderr
    assert leftovers(clash_name) == [], "a failed up must leave nothing behind"
