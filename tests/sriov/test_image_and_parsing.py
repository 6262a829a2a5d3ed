"""The pieces of the SR-IOV work that need no QEMU: the initramfs writer, the ELF reader,
reading ``ip -j -d link`` and the kernel's refusals, the topology rules for real NICs,
and the passthrough check's reason on a host without an IOMMU.
"""

from __future__ import annotations

import gzip
import json
import stat
from pathlib import Path

import pytest

from bench.qemu.cpio import CpioEntry, write_initramfs, write_newc
from bench.qemu.elf import ElfError, ElfFile
from bench.topology import TopologyError, load_topology
from drivers import linux_pf_commands as cmd
from drivers.linux_pf import LinuxPf
from drivers.linux_pf_vfio import bind_vfio, passthrough_check
from drivers.pf_control import (
    BUSY,
    FAILED,
    NOT_SUPPORTED,
    OUT_OF_RANGE,
    PfControlError,
    VfConfig,
    VfSetting,
)

REPO = Path(__file__).resolve().parents[2]


def test_newc_archive_has_headers_names_and_a_trailer_and_is_reproducible() -> None:
    """Verify: each member is a ``070701`` header with its name and 4-byte padding; the
    archive ends with TRAILER!!!; the same entries give the same gzip bytes."""
    entries = [
        CpioEntry("/etc", stat.S_IFDIR | 0o755),
        CpioEntry("/etc/hostname", stat.S_IFREG | 0o644, b"host\n"),
        CpioEntry("/init", stat.S_IFLNK | 0o777, target="/bin/busybox"),
    ]
    raw = write_newc(entries)
    assert raw.startswith(b"070701") and raw.count(b"070701") == 4
    assert b"etc/hostname\0" in raw and b"host\n" in raw and b"/bin/busybox" in raw
    assert b"TRAILER!!!\0" in raw and len(raw) % 4 == 0
    packed = write_initramfs(entries)
    assert packed == write_initramfs(entries) and gzip.decompress(packed) == raw


def test_elf_reader_finds_needed_libraries_and_refuses_other_files(tmp_path: Path) -> None:
    """Verify: /bin/ls needs libc.so.6; a text file is not taken for ELF."""
    assert "libc.so.6" in ElfFile(Path("/bin/ls")).needed()
    text = tmp_path / "x.txt"
    text.write_text("not elf")
    with pytest.raises(ElfError):
        ElfFile(text)


IP_JSON = json.dumps(
    [
        {
            "ifname": "eth1",
            "vfinfo_list": [
                {
                    "vf": 0,
                    "address": "02:4E:50:00:10:00",
                    "vlan_list": [{"vlan": 100, "qos": 2}],
                    "rate": {"max_tx": 0, "min_tx": 0},
                    "spoofchk": True,
                    "link_state": "auto",
                    "trust": False,
                    "stats": {"rx": {"packets": 5, "bytes": 300}, "tx": {"tx_packets": 7}},
                },
                {"vf": 1, "address": "00:00:00:00:00:00", "vlan_list": [{}]},
            ],
        }
    ]
)


def test_ip_json_reads_into_vf_configs_and_counters() -> None:
    """Verify: MAC lower-cased, VLAN/QoS, flags and rates read; a VF without VLAN is 0;
    iproute2 6.1's ``tx_packets`` spelling inside ``tx`` is understood."""
    configs = cmd.parse_vfinfo(IP_JSON)
    assert configs[0] == VfConfig(0, "02:4e:50:00:10:00", 100, 2, True, False, "auto", 0, 0)
    assert (configs[1].vlan, configs[1].qos, configs[1].spoofchk) == (0, 0, None)
    stats = cmd.parse_vf_stats(IP_JSON, 0)
    assert stats == {"rx_packets": 5, "rx_bytes": 300, "tx_packets": 7, "tx_bytes": 0}
    assert cmd.parse_vf_stats(IP_JSON, 1) is None


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        ("RTNETLINK answers: Operation not supported", NOT_SUPPORTED),
        ("bash: echo: write error: Device or resource busy", BUSY),
        ("bash: echo: write error: Numerical result out of range", OUT_OF_RANGE),
        ('Error: argument "4096" is wrong: Invalid "vlan" value', OUT_OF_RANGE),
        ("something else", FAILED),
    ],
)
def test_kernel_refusals_map_to_reasons(stderr: str, reason: str) -> None:
    assert cmd.refusal_reason(stderr) == reason


def test_qos_is_set_on_the_current_port_vlan() -> None:
    current = VfConfig(vf=2, vlan=100)
    assert cmd.set_vf("eth1", 2, VfSetting.QOS, 3, current) == (
        "ip link set dev eth1 vf 2 vlan 100 qos 3"
    )
    assert cmd.set_vf("eth1", 2, VfSetting.SPOOFCHK, False, current).endswith("spoofchk off")
    assert cmd.set_vf("eth1", 2, VfSetting.LINK_STATE, "auto", current).endswith("state auto")


def test_real_nic_settings_belong_to_lab_hosts(tmp_path: Path) -> None:
    """Verify: the QEMU host topology validates; ``qemu:`` on an emulated host and a VF
    setting beyond ``vfs:`` are errors naming the field."""
    load_topology(REPO / "topologies" / "qemu-sriov-host.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "lab: {name: bad}\nswitches: [{name: sw0}]\nhosts:\n"
        "  - name: h1\n    qemu: {image: x}\n"
        "  - name: h2\n    backend: lab\n"
        "    ssh: {address: 127.0.0.1, key: k, known_hosts: kh}\n"
        "    nics: [{name: n0, pci: '0000:01:00.0', vfs: 2, vf_config: [{vf: 2, trust: true}]}]\n"
    )
    with pytest.raises(TopologyError) as caught:
        load_topology(bad)
    text = str(caught.value)
    assert "qemu" in text and "'backend: lab'" in text, text
    assert "vf_config" in text and "below vfs: 2" in text, text


class _Result:
    def __init__(self, stdout: str, exit_status: int = 0, stderr: str = "") -> None:
        self.stdout, self.exit_status, self.stderr = stdout, exit_status, stderr


class _HostWithoutIommu:
    """A host whose VF has no IOMMU group: what a QEMU guest without VT-d shows."""

    name = "no-iommu-host"

    def run(self, command: str, timeout: float = 30.0, check: bool = False) -> _Result:
        if "virtfn" in command:
            return _Result("0 0000:01:10.0 eth2 igbvf -\n")
        return _Result("", 1, f"unexpected command {command}")


def test_a_vf_without_iommu_group_cannot_be_passed_through_and_says_why() -> None:
    """Verify: the check says no, naming the missing IOMMU as the reason; binding refuses
    with that reason before touching the VF."""
    pf = LinuxPf(_HostWithoutIommu(), "0000:01:00.0")
    check = passthrough_check(pf, 0)
    assert not check.possible and check.iommu_group is None
    assert "no IOMMU group" in check.reason and "intel_iommu=on" in check.reason
    with pytest.raises(PfControlError, match="no IOMMU group") as caught:
        bind_vfio(pf, 0)
    assert caught.value.reason == NOT_SUPPORTED and "no-iommu-host" in str(caught.value)
