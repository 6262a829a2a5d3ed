"""``npabench dump``: a guest's mode, VF, plugin, ring indices and counters from a live lab."""

from __future__ import annotations

import json
from pathlib import Path

from tests.labkit import leftovers, npabench, write_topology

NIC = {"name": "nic0", "model": "alpha-10g", "vfs": 2}


def test_dump_shows_the_guest_data_path_from_device_shell_and_nic(tmp_path: Path) -> None:
    path, name = write_topology(tmp_path, hosts=2, nics={"h1": [NIC]}, guests=1)
    npabench("up", str(path), check=True)
    try:
        text = npabench("dump", str(path), "vm1", check=True).stdout
        assert text.startswith("guest vm1 on h1")
        assert "mode           passthrough" in text, text
        assert "queue 0 rings  {" in text and "rx_head" in text, text
        assert "counter vf_rx_packets" in text, text
        data = json.loads(npabench("dump", str(path), "vm1", "--json", check=True).stdout)
        assert data["device"]["mode"] == "passthrough"
        assert data["device"]["plugin"] == data["driver"]["plugin"] is not None
        assert data["vf"]["vf"] == data["device"]["vf"] and data["vf"]["state"]
        assert len(data["vf"]["queues"]) >= 1
        unknown = npabench("dump", str(path), "vm9")
        assert unknown.returncode == 2 and "no guest 'vm9'" in unknown.stderr
    finally:
        npabench("down", str(path), check=True)
    assert leftovers(name) == []
