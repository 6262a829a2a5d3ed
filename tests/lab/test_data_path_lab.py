"""A lab with an emulated NIC and a guest: the guest is a host like any other over SSH, its
NIC is a TAP with its MAC and address served by the shell, its vmxnet3 device answers
``status`` and ``switch``, and ``down`` leaves no namespace, link, process or shared memory."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bench.errors import LabError, UsageError
from bench.lab import attach, data_path
from bench.lab.lifecycle import bring_up
from bench.lab.state import state_root
from nic_emulators.config import lab_shm_files
from tests.labkit import leftovers, npabench, recorded_pids, write_topology

NIC = {"name": "nic0", "model": "alpha-10g", "vfs": 2}


def _root_links_with_mac(mac: str) -> list[str]:
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)
    return [link["ifname"] for link in links if link.get("address") == mac]


def test_up_with_a_nic_and_a_guest_and_down(tmp_path: Path) -> None:
    path, name = write_topology(tmp_path, hosts=2, nics={"h1": [NIC]}, guests=1)
    (spec,) = yaml.safe_load(path.read_text())["guests"]
    up = npabench("up", str(path))
    assert up.returncode == 0, up.stderr
    pids = recorded_pids(name)
    try:
        assert "1 NIC emulator(s) ready: h1/nic0 alpha-10g" in up.stderr
        assert "vm1: ssh root@" in up.stdout
        # sshd of h0, h1, vm1; the NIC emulator; the guest's vmxnet3 device and shell.
        assert len(pids) == 6
        assert lab_shm_files(name), "VF rings and guest memory live in /dev/shm while up"
        ssh_address = _check_status(path)
        _check_guest_netdev(path, name, spec)
        _check_python_api(path, ssh_address)
        _check_switch(path)
    finally:
        down = npabench("down", str(path))
    assert down.returncode == 0, down.stderr
    assert leftovers(name, pids) == []
    assert _root_links_with_mac(spec["mac"]) == [], "the guest's TAP went with its namespace"


def _check_status(path: Path) -> str:
    """``status`` lists the guest with what its device says; returns its SSH address."""
    status = json.loads(npabench("status", str(path), "--json", check=True).stdout)
    (guest,) = status["guests"]
    assert (guest["name"], guest["host"], guest["nic"]) == ("vm1", "h1", "nic0")
    assert guest["sshd_running"] and guest["device_running"] and guest["shell_running"]
    assert guest["mode"] in ("passthrough", "emulation"), guest
    assert "error" not in guest
    assert [(n["host"], n["name"], n["emulator_running"]) for n in status["nics"]] == [
        ("h1", "nic0", True)
    ]
    text = npabench("status", str(path), check=True).stdout
    assert "guests:" in text and "vm1" in text
    address: str = guest["ssh"]["address"]
    return address


def _check_guest_netdev(path: Path, name: str, spec: dict[str, str]) -> None:
    """The guest is its own namespace, reached over SSH; its TAP has its MAC and address."""
    ran = npabench("exec", str(path), "vm1", "--", "ip netns identify $$; ip -j addr show dev eth0")
    assert ran.returncode == 0, ran.stderr
    netns, addr_json = ran.stdout.split("\n", 1)
    assert netns == f"npa-{name}-vm1"
    (tap,) = json.loads(addr_json)
    assert tap["address"] == spec["mac"]
    addresses = [f"{a['local']}/{a['prefixlen']}" for a in tap["addr_info"]]
    assert spec["address"] in addresses, tap
    assert "UP" in tap["flags"]


def _check_python_api(path: Path, ssh_address: str) -> None:
    """The same from Python: names, control clients, clear errors for unknown names."""
    with attach(path) as lab:
        assert lab.guests == ["vm1"]
        assert lab.backend_of("vm1") == "emulated"
        assert f"inet {ssh_address}/" in lab.host("vm1").run("ip -4 -o addr show mgmt0").stdout
        with lab.guest_control("vm1") as device:
            assert device.call("status")["guest"] == "vm1"
        with lab.nic_control("h1", "nic0") as nic:
            assert nic.call("STATUS")["model"] == "alpha-10g"
        with pytest.raises(UsageError, match=r"no guest 'vm2' \(guests: vm1\)"):
            lab.guest_control("vm2")
        with pytest.raises(UsageError, match=r"no NIC 'nic1' \(NICs: nic0\)"):
            lab.nic_control("h1", "nic1")


def _check_switch(path: Path) -> None:
    """The device switches on request and says how; an unknown guest is bad input."""
    switched = npabench("switch", str(path), "vm1", "emulation", "--json", check=True)
    result = json.loads(switched.stdout)
    assert result["mode"] == "emulation"
    assert isinstance(result["took_ms"], int | float)
    unknown = npabench("switch", str(path), "vm9", "passthrough")
    assert unknown.returncode == 2
    assert "no guest 'vm9'" in unknown.stderr and "vm1" in unknown.stderr


def test_a_data_path_process_that_does_not_start_fails_up_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, name = write_topology(tmp_path, hosts=2, nics={"h1": [NIC]}, guests=1)
    spawn = data_path._spawn

    def broken_shell(*args: object, **kwargs: object) -> object:
        if args[2] == "drivers.shell":  # the module: one that does not exist
            args = (*args[:2], "drivers.no_such_shell", *args[3:])
        return spawn(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(data_path, "_spawn", broken_shell)
    with pytest.raises(LabError) as info:
        bring_up(path)
    message = str(info.value)
    assert "shell (guest driver) of guest vm1 did not start: exited" in message
    assert "No module named drivers.no_such_shell" in message, "the log's tail is shown"
    assert leftovers(name) == []


def test_cleanup_finds_nics_and_guests_of_a_lab_whose_journal_is_gone(tmp_path: Path) -> None:
    path, name = write_topology(tmp_path, hosts=2, nics={"h1": [NIC]}, guests=1)
    npabench("up", str(path), check=True)
    pids = recorded_pids(name)
    shutil.rmtree(state_root() / name)  # the journal is lost; processes, /dev/shm remain
    assert leftovers(name) != []
    done = npabench("cleanup", name)
    assert done.returncode == 0, done.stderr
    assert f"namespace npa-{name}-vm1" in done.stdout
    assert leftovers(name, pids) == []
