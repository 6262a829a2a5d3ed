"""Emulated instruments in a running lab: reached through pyvisa, wired to the lab's links."""

from __future__ import annotations

import json
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
    {"name": "psu1", "kind": "power-supply", "channels": 3},
]


@pytest.fixture(scope="module")
def lab_path(tmp_path_factory: pytest.TempPathFactory):
    path, name = write_topology(
        tmp_path_factory.mktemp("instruments"), hosts=2, instruments=INSTRUMENTS
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
    done = npabench("instrument", str(lab_path), "psu1", "VOLT 12,(@2)", "VOLT? (@2)")
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) == 12.0
    bad = npabench("instrument", str(lab_path), "psu1", "VOLT 99,(@2)")
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
