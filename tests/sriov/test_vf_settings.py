"""Per-VF settings through the Linux PF driver, against the real igb driver: each one set,
read back and verified; each refusal of the kernel a clear error.

Fixtures: ``tests/qemu_sriov_host.py``.
"""

from __future__ import annotations

import pytest

from drivers import linux_pf_commands
from drivers.linux_pf import LinuxPf
from drivers.linux_pf_vfio import bind_vfio, unbind_vfio
from drivers.pf_control import (
    BUSY,
    NO_SUCH_VF,
    NOT_SUPPORTED,
    OUT_OF_RANGE,
    PfControlError,
    SettingValue,
    VfSetting,
)

VF = 1
#: A value for each setting that differs from a fresh VF's.
NEW_VALUES: dict[VfSetting, SettingValue] = {
    VfSetting.MAC: "02:4e:50:00:20:01",
    VfSetting.VLAN: 100,
    VfSetting.QOS: 5,
    VfSetting.SPOOFCHK: False,
    VfSetting.TRUST: True,
    VfSetting.LINK_STATE: "disable",
    VfSetting.MAX_TX_RATE: 100,
    VfSetting.MIN_TX_RATE: 10,
}


@pytest.mark.parametrize("setting", list(VfSetting), ids=str)
def test_a_vf_setting_is_applied_and_read_back(igb_vfs: LinuxPf, setting: VfSetting) -> None:
    """Steps: set ``setting`` of a VF to a new value (QoS on a port VLAN), then back to
    the fresh value. Verify: ``ip -j -d link show`` reads back each value; the other
    VFs are untouched. What igb does not implement is skipped with the kernel's answer."""
    pf = igb_vfs
    if setting not in pf.supported_settings():
        pytest.skip(pf.unsupported_reason(setting))
    before = pf.vf_configs()
    fresh = before[VF]
    if setting is VfSetting.QOS:
        pf.set_vf(VF, VfSetting.VLAN, 100)
    if setting in (VfSetting.MAX_TX_RATE, VfSetting.MIN_TX_RATE):
        pf.wait_for_link()  # igb takes rates only with the link up at 1 Gbit/s
    try:
        after = pf.set_vf(VF, setting, NEW_VALUES[setting])
    except PfControlError as err:
        # igb has no minimum rate and answers EINVAL, not EOPNOTSUPP, for one.
        if err.reason == NOT_SUPPORTED or (
            setting is VfSetting.MIN_TX_RATE and err.reason == OUT_OF_RANGE
        ):
            pytest.skip(f"igb refuses it: {err}")
        raise
    assert after.get(setting) == NEW_VALUES[setting], after
    others = [c for c in pf.vf_configs() if c.vf != VF]
    assert others == [c for c in before if c.vf != VF]
    value = fresh.get(setting)
    assert value is not None
    assert pf.set_vf(VF, setting, value).get(setting) == value


def test_max_tx_rate_limits_and_lifts(igb_vfs: LinuxPf) -> None:
    """Steps: limit a VF to 100 Mbit/s, then to 0. Verify: each reads back (0: no limit)."""
    igb_vfs.wait_for_link()
    assert igb_vfs.set_vf(VF, VfSetting.MAX_TX_RATE, 100).max_tx_rate == 100
    assert igb_vfs.set_vf(VF, VfSetting.MAX_TX_RATE, 0).max_tx_rate == 0


REFUSALS = {
    "vf-out-of-range": (7, VfSetting.MAC, "02:4e:50:00:20:07", NO_SUCH_VF),
    "multicast-mac": (VF, VfSetting.MAC, "01:00:5e:00:00:01", OUT_OF_RANGE),
    "vlan-4096": (VF, VfSetting.VLAN, 4096, OUT_OF_RANGE),
    "qos-8": (VF, VfSetting.QOS, 8, OUT_OF_RANGE),
    "link-state-on-igb": (VF, VfSetting.LINK_STATE, "disable", NOT_SUPPORTED),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_setting_is_a_clear_error(igb_vfs: LinuxPf, case: str) -> None:
    """Steps: ask for what the kernel refuses. Verify: PfControlError with the reason, its
    message naming host, PF, VF, setting, command, exit status and the kernel's words; the
    VFs' settings are unchanged."""
    vf, setting, value, reason = REFUSALS[case]
    before = igb_vfs.vf_configs()
    with pytest.raises(PfControlError) as caught:
        igb_vfs.set_vf(vf, setting, value)
    err = caught.value
    text = str(err)
    assert err.reason == reason, text
    assert (err.vf, err.setting) == (vf, setting), text
    for part in ("igb-host", igb_vfs.pci, f"VF {vf}", str(setting), "ip link set", "exited"):
        assert part in text, f"{part!r} missing from: {text}"
    assert err.exit_status not in (None, 0) and err.detail, text
    assert igb_vfs.vf_configs() == before


def test_the_kernels_vf_count_refusals_are_clear_errors(igb_vfs: LinuxPf) -> None:
    """Steps: write more VFs than ``sriov_totalvfs``, then a different count while VFs
    exist (not through 0). Verify: "out of range" and "busy", naming PF and sriov_numvfs;
    the VFs are as they were."""
    total = igb_vfs.total_vfs()
    for count, reason in ((total + 1, OUT_OF_RANGE), (2, BUSY)):
        command = linux_pf_commands.write_numvfs(igb_vfs.pci, count, 5.0)
        with pytest.raises(PfControlError) as caught:
            igb_vfs.run(command, action=f"write {count}", setting="sriov_numvfs")
        assert caught.value.reason == reason, caught.value
        assert igb_vfs.pci in str(caught.value) and "sriov_numvfs" in str(caught.value)
        assert igb_vfs.num_vfs() == len(igb_vfs.vf_devices()) == 4


def test_vf_counters_are_read_from_the_pf(igb_vfs: LinuxPf) -> None:
    """Steps: read a VF's counters, send from the VF's netdev, read again; bind it to
    vfio-pci and read them once more (from the PF then). Verify: packets and bytes both
    ways, whole numbers that never go down; frames the VF sent (when it has carrier) are
    counted."""
    device = igb_vfs.vf_device(VF)
    assert device.netdev is not None, device
    before = igb_vfs.vf_counters(VF)
    assert set(before) >= {"rx_packets", "tx_packets", "rx_bytes", "tx_bytes"}, before
    net = f"/sys/class/net/{device.netdev}"
    carrier = igb_vfs.run(  # waits up to 5 s for carrier (igbvf polls its link every 2 s)
        f"ip link set {device.netdev} up; i=0; "
        f'until [ "$(cat {net}/carrier 2>/dev/null)" = 1 ] || [ $i -ge 100 ]; do '
        "i=$((i+1)); sleep 0.05; done; "
        f"arping -c 3 -w 3 -I {device.netdev} 10.9.9.9 >/dev/null; "
        f"cat {net}/carrier 2>/dev/null || echo 0",
        action="send from the VF",
    ).split()[-1]
    after = igb_vfs.vf_counters(VF)
    assert all(after[k] >= before[k] >= 0 for k in before), (before, after)
    bind_vfio(igb_vfs, VF)
    try:
        from_pf = igb_vfs.vf_counters(VF)
    finally:
        unbind_vfio(igb_vfs, VF)
    assert set(from_pf) == {"rx_packets", "tx_packets", "rx_bytes", "tx_bytes"}, from_pf
    if carrier != "1":
        pytest.skip(
            f"counters read ({after}), but the VF's netdev {device.netdev} has no carrier "
            "in QEMU's igb model, so no frame left it to be counted"
        )
    assert after["tx_packets"] - before["tx_packets"] >= 3, (before, after)
