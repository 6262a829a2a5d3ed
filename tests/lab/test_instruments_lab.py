"""Emulated instruments in a running lab: reached through pyvisa, wired to the lab's links."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench.lab.state import state_root
from tests.labkit import leftovers, npabench, recorded_pids, wait_for, write_topology

INSTRUMENTS = [
    {
        "name": "att1",
        "kind": "optical-attenuator",
        "channels": 2,
        "wiring": [{"channel": 1, "to": "h1/uplink0"}],
    },
    {
        "name": "psu1",
        "kind": "power-supply",
        "channels": 3,
        "wiring": [{"channel": 2, "to": "h1/nic0"}],
    },
]
#: The FPGA board the supply feeds, and a guest using its VFs.
NICS = {"h1": [{"name": "nic0", "model": "fpga-nic", "vfs": 2, "link": "uplink0"}]}


@pytest.fixture(scope="module")
def lab_path(tmp_path_factory: pytest.TempPathFactory):
    path, name = write_topology(
        tmp_path_factory.mktemp("instruments"),
        hosts=2,
        instruments=INSTRUMENTS,
        nics=NICS,
        guests=1,
        guest_host="h1",
    )
    npabench("up", str(path), check=True)
    pids = recorded_pids(name)
    yield path
    npabench("down", str(path))
    assert leftovers(name, pids) == [], "the emulators stop with the lab"


def _carrier(path: Path) -> str:
    done = npabench("exec", str(path), "h1", "--", "cat /sys/class/net/uplink0/carrier")
    return done.stdout.strip() or done.stderr.strip()


def test_status_lists_emulated_instruments_with_their_resource(lab_path: Path) -> None:
    status = json.loads(npabench("status", str(lab_path), "--json", check=True).stdout)
    by_name = {i["name"]: i for i in status["instruments"]}
    assert set(by_name) == {"att1", "psu1"}
    for instrument in by_name.values():
        assert instrument["emulated"]
        assert instrument["resource"].startswith("TCPIP0::127.0.0.1::")
        assert instrument["resource"].endswith("::SOCKET")
    assert by_name["att1"]["wiring"] == [{"channel": 1, "to": "h1/uplink0"}]


def test_instrument_command_sets_and_reads_back(lab_path: Path) -> None:
    done = npabench("instrument", str(lab_path), "psu1", "VOLT 5.5,(@3)", "VOLT? (@3)")
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) == 5.5
    bad = npabench("instrument", str(lab_path), "psu1", "VOLT 99,(@3)")
    assert bad.returncode == 3
    assert "-222" in bad.stderr and "psu1" in bad.stderr and "Traceback" not in bad.stderr


def test_attenuator_shutter_and_threshold_take_the_link_down_and_up(lab_path: Path) -> None:
    assert _carrier(lab_path) == "1"
    npabench("instrument", str(lab_path), "att1", ":OUTP1:STAT OFF", check=True)
    wait_for(lambda: _carrier(lab_path) != "1", 10, "h1/uplink0 to lose carrier")
    npabench("instrument", str(lab_path), "att1", ":OUTP1:STAT ON", check=True)
    wait_for(lambda: _carrier(lab_path) == "1", 10, "h1/uplink0 to get carrier back")
    # Attenuation past the receiver's threshold is darkness too.
    npabench("instrument", str(lab_path), "att1", ":INP1:ATT 45", check=True)
    wait_for(lambda: _carrier(lab_path) != "1", 10, "h1/uplink0 to lose carrier")
    npabench("instrument", str(lab_path), "att1", ":INP1:ATT 3", check=True)
    wait_for(lambda: _carrier(lab_path) == "1", 10, "h1/uplink0 to get carrier back")
    # Channel 2 is wired to nothing: once its change has been handled, the link has not moved.
    changes = state_root() / lab_name(lab_path) / "instruments" / "att1" / "changes.log"
    npabench("instrument", str(lab_path), "att1", ":OUTP2:STAT OFF", check=True)
    wait_for(lambda: "channel 2 -> down" in changes.read_text(), 10, "the change of channel 2")
    assert _carrier(lab_path) == "1"


def lab_name(path: Path) -> str:
    return json.loads(npabench("status", str(path), "--json", check=True).stdout)["lab"]


def _nic_status(path: Path) -> dict[str, object]:
    """The FPGA NIC as host h1 sees it, asked over SSH on h1."""
    control = state_root() / lab_name(path) / "nics" / "h1-nic0" / "ctl.sock"
    command = f"{sys.executable} -m nic_emulators.nicctl {control} STATUS"
    done = npabench("exec", str(path), "h1", "--", command)
    assert done.returncode == 0, done.stderr
    status: dict[str, object] = json.loads(done.stdout)
    return status


def _guest_mode(path: Path) -> str:
    status = json.loads(npabench("status", str(path), "--json", check=True).stdout)
    (guest,) = status["guests"]
    return str(guest["mode"])


def test_power_channel_off_makes_the_wired_nic_vanish_and_on_brings_it_back(
    lab_path: Path,
) -> None:
    """Steps: the supply channel feeding h1's FPGA NIC goes off, then on again.
    Verify: over SSH on h1, the NIC is unpowered with no VF present and its link has no
    carrier; the guest on it falls back to emulation; on power-on the VFs re-enumerate,
    the link returns and the guest returns to passthrough."""
    wait_for(lambda: _guest_mode(lab_path) == "passthrough", 15, "vm1 in passthrough")
    before = _nic_status(lab_path)
    assert before["powered"] is True
    assert all(vf["state"] != "absent" for vf in before["vfs"])  # type: ignore[attr-defined]
    npabench("instrument", str(lab_path), "psu1", "OUTP OFF,(@2)", check=True)

    def unpowered() -> bool:
        status = _nic_status(lab_path)
        vfs = status["vfs"]
        return status["powered"] is False and all(vf["state"] == "absent" for vf in vfs)  # type: ignore[attr-defined]

    wait_for(unpowered, 10, "h1's NIC to lose power and its VFs")
    assert _carrier(lab_path) != "1", "a powered-off NIC has no link"
    wait_for(lambda: _guest_mode(lab_path) == "emulation", 10, "vm1 to fall back to emulation")
    npabench("instrument", str(lab_path), "psu1", "OUTP ON,(@2)", check=True)
    wait_for(lambda: _nic_status(lab_path)["powered"] is True, 10, "h1's NIC to power on")
    wait_for(lambda: _carrier(lab_path) == "1", 10, "h1/uplink0 to get carrier back")
    wait_for(lambda: _guest_mode(lab_path) == "passthrough", 15, "vm1 back in passthrough")
