"""``npabench up`` on real-NIC hosts records each PF and sets it up as the topology says;
``down`` and a failed ``up`` put back what was there. Against the QEMU igb host, reached
as a ``backend: lab`` host over SSH; and once through ``qemu:``, where ``up`` boots it.

Fixtures: ``tests/qemu_sriov_host.py``.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.errors import LabError
from bench.lab import bring_down, bring_up
from bench.lab.state import LabState
from bench.qemu.sriov_host import PF_PCI_ADDRESS, RunningSriovHost, free_local_port
from drivers.linux_pf import LinuxPf
from drivers.pf_control import PfState, VfSetting
from tests.labkit import leftovers
from tests.qemu_sriov_host import IMAGE_DIR


def _topology(
    directory: Path, port: int, nic: dict[str, Any], qemu: bool = False
) -> tuple[Path, str]:
    lab = "sr" + secrets.token_hex(2)
    host: dict[str, Any] = {
        "name": "igb-host",
        "backend": "lab",
        "role": "hypervisor",
        "ssh": {
            "address": "127.0.0.1",
            "port": port,
            "key": str(IMAGE_DIR / "id_ed25519"),
            "known_hosts": str(IMAGE_DIR / "known_hosts"),
        },
        "interfaces": [{"name": "eth1", "switch": "sw0"}],
        "nics": [{"name": "igb0", "pci": PF_PCI_ADDRESS, "link": "eth1", **nic}],
    }
    if qemu:
        host["qemu"] = {"image": str(IMAGE_DIR)}
    doc = {
        "lab": {"name": lab},
        "switches": [{"name": "sw0"}],
        "hosts": [host],
        "limits": {"lab_up_timeout_s": 90},
    }
    path = directory / f"{lab}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, lab


@pytest.fixture
def original(igb_pf: LinuxPf) -> PfState:
    """The PF as a lab engineer left it: 2 VFs, VF 0 with a MAC and a VLAN."""
    igb_pf.set_num_vfs(0)
    igb_pf.set_num_vfs(2)
    igb_pf.set_vf(0, VfSetting.MAC, "02:4e:50:00:30:00")
    igb_pf.set_vf(0, VfSetting.VLAN, 7)
    return igb_pf.snapshot()


WANTED = {
    "vfs": 4,
    "vf_config": [
        {"vf": 0, "mac": "02:4e:50:00:31:00", "vlan": 200, "qos": 3, "trust": True},
        {"vf": 3, "spoofchk": False},
    ],
}


def test_up_configures_the_pf_and_down_restores_it(
    qemu_sriov_host: RunningSriovHost, igb_pf: LinuxPf, original: PfState, tmp_path: Path
) -> None:
    """Steps: up a topology asking for 4 VFs with settings on VF 0 and 3; down. Verify: up
    made exactly that (read over SSH); after down the PF has its 2 VFs and VF 0's MAC and
    VLAN back, and the lab left nothing (journal, PF records) behind."""
    path, lab = _topology(tmp_path, qemu_sriov_host.endpoint.port, WANTED)
    bring_up(path)
    try:
        configs = igb_pf.vf_configs()
        assert len(configs) == 4
        assert (configs[0].mac, configs[0].vlan, configs[0].qos, configs[0].trust) == (
            "02:4e:50:00:31:00", 200, 3, True,
        )  # fmt: skip
        assert configs[3].spoofchk is False
    finally:
        bring_down(path)
    assert igb_pf.snapshot() == original
    assert LabState.load(lab) is None and leftovers(lab) == []


def test_a_failed_up_restores_the_pf(
    qemu_sriov_host: RunningSriovHost, igb_pf: LinuxPf, original: PfState, tmp_path: Path
) -> None:
    """Steps: up a topology whose last VF setting igb refuses (link state), after the VF
    count and other settings were changed. Verify: up fails with the kernel's refusal
    named; the PF is as it was before; nothing of the lab is left."""
    nic = {"vfs": 4, "vf_config": [{"vf": 1, "mac": "02:4e:50:00:32:01", "link_state": "disable"}]}
    path, lab = _topology(tmp_path, qemu_sriov_host.endpoint.port, nic)
    with pytest.raises(LabError, match=r"VF 1: link_state: .*not supported"):
        bring_up(path)
    assert igb_pf.snapshot() == original
    assert LabState.load(lab) is None and leftovers(lab) == []


def test_up_boots_a_qemu_host_and_down_stops_it(tmp_path: Path) -> None:
    """Steps: up a topology whose host has ``qemu:`` (the bench boots it), then down.
    Verify: the host answers over SSH with the topology's VFs; after down its QEMU runs no
    more and nothing of the lab is left."""
    if not (IMAGE_DIR / "initrd.img").is_file():
        pytest.skip(f"no QEMU SR-IOV host image in {IMAGE_DIR}: run `make qemu-sriov-image`")
    path, lab = _topology(tmp_path, free_local_port(), WANTED, qemu=True)
    lab_up = bring_up(path)
    try:
        state = LabState.load(lab)
        assert state is not None
        qemu = [r.pid for r in state.resources if r.name == "qemu igb-host"]
        assert len(qemu) == 1
        pf = LinuxPf(lab_up.host("igb-host"), PF_PCI_ADDRESS)
        assert pf.num_vfs() == 4 and pf.vf_config(0).vlan == 200
    finally:
        lab_up.close()
        bring_down(path)
    assert leftovers(lab, qemu) == []
