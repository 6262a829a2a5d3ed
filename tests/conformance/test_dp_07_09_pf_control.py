"""Conformance DP-07, DP-08 and DP-09 at the PF: what an administrator sets on a VF, on
every kind of NIC through one PF-control interface (``pf_kit.pf_target``: the lab's NIC
and the QEMU igb host's real kernel SR-IOV).

DP-07: each VF setting the NIC supports is applied and reads back, and can be put back;
what a NIC does not support is skipped with its reason. DP-08: requests out of range or
against the port's policy are refused with an error naming PF, VF and setting, and
change nothing. DP-09: spoof checking reads back on; turning it off is either applied
and read back, or refused by the port's policy. The traffic side of these scenarios
(frames filtered, forged frames dropped) is ``test_dp_05_offloads_and_filters.py``.
"""

from __future__ import annotations

import pytest

from drivers.pf_control import (
    NO_SUCH_VF,
    NOT_SUPPORTED,
    OUT_OF_RANGE,
    REFUSED,
    PfControlError,
    SettingValue,
    VfSetting,
)
from tests.conformance.pf_kit import (
    PfTarget,
    pf_target_fixture,  # noqa: F401  (the fixture "pf_target")
)

#: DP-07's new value per setting (different from a fresh VF's, inside the default policy).
NEW_VALUES: dict[VfSetting, SettingValue] = {
    VfSetting.MAC: "02:4e:50:00:40:01",
    VfSetting.VLAN: 100,
    VfSetting.QOS: 4,
    VfSetting.TRUST: True,
    VfSetting.LINK_STATE: "disable",
    VfSetting.MAX_TX_RATE: 100,
    VfSetting.MTU: 1400,
}


def _skip_unsupported(target: PfTarget, setting: VfSetting) -> None:
    if setting not in target.pf.supported_settings():
        pytest.skip(f"{target.label}: {target.pf.unsupported_reason(setting)}")


@pytest.mark.catalogue("DP-07")
@pytest.mark.parametrize("setting", list(NEW_VALUES), ids=str)
def test_dp07_a_vf_setting_is_applied_read_back_and_put_back(
    pf_target: PfTarget, setting: VfSetting
) -> None:
    """Steps: set ``setting`` of the VF to a new value (QoS rides on a port VLAN), then to
    what it was. Verify: each value reads back from the NIC; the NIC's refusals of what it
    does not implement (or its port policy forbids) are skipped with the NIC's words."""
    _skip_unsupported(pf_target, setting)
    pf, vf = pf_target.pf, pf_target.vf
    found = pf.vf_config(vf)
    try:
        if setting is VfSetting.QOS:
            pf.set_vf(vf, VfSetting.VLAN, 100)
        if setting is VfSetting.MAX_TX_RATE and hasattr(pf, "wait_for_link"):
            pf.wait_for_link()  # a Linux PF takes rates only with its link up
        applied = pf.set_vf(vf, setting, NEW_VALUES[setting])
    except PfControlError as err:
        if err.reason in (NOT_SUPPORTED, REFUSED):
            pytest.skip(f"{pf_target.label}: {err}")
        raise
    assert applied.get(setting) == NEW_VALUES[setting], applied
    original = found.get(setting)
    assert original is not None, found
    assert pf.set_vf(vf, setting, original).get(setting) == original
    if setting is VfSetting.QOS:
        pf.set_vf(vf, VfSetting.VLAN, found.vlan)
    assert pf.vf_config(vf) == found


@pytest.mark.catalogue("DP-08")
@pytest.mark.parametrize(
    "case", ["vf-out-of-range", "multicast-mac", "vlan-outside-range", "mac-against-policy"]
)
def test_dp08_a_refused_request_is_a_clear_error_and_changes_nothing(
    pf_target: PfTarget, case: str
) -> None:
    """Steps: ask the PF for a VF it does not have, a multicast MAC, a VLAN beyond 4094
    (or beyond the port's policy), another MAC where a port policy forbids it. Verify:
    PfControlError with the expected reason whose message names the PF, the VF and the
    setting; the VF's settings are unchanged."""
    pf, vf = pf_target.pf, pf_target.vf
    request: tuple[int, VfSetting, SettingValue]
    reasons: tuple[str, ...]
    if case == "vf-out-of-range":
        request, reasons = (pf.total_vfs() + 1, VfSetting.MAC, "02:4e:50:00:40:09"), (NO_SUCH_VF,)
    elif case == "multicast-mac":
        request, reasons = (vf, VfSetting.MAC, "01:00:5e:00:00:01"), (OUT_OF_RANGE,)
    elif case == "vlan-outside-range":
        # 5000 is no VLAN id; a port policy may refuse it before the range check does.
        request, reasons = (vf, VfSetting.VLAN, 5000), (OUT_OF_RANGE, REFUSED)
    else:
        if not pf_target.port_policy:
            pytest.skip(
                f"{pf_target.label}: a Linux PF has no port policy; the administrator may "
                "set any MAC (trust off is what stops the VF's own changes)"
            )
        request, reasons = (vf, VfSetting.MAC, "02:4e:50:00:40:02"), (REFUSED,)
    before = pf.vf_config(vf)
    with pytest.raises(PfControlError) as caught:
        pf.set_vf(*request)
    err = caught.value
    text = str(err)
    assert err.reason in reasons, text
    for part in (pf.name, f"VF {request[0]}", str(request[1])):
        assert part in text, f"{part!r} missing from: {text}"
    assert pf.vf_config(vf) == before


@pytest.mark.catalogue("DP-09")
def test_dp09_spoof_checking_is_on_and_stays_under_control(pf_target: PfTarget) -> None:
    """Steps: turn spoof checking on, then try off, then on again. Verify: on reads back on;
    off either reads back off (no port policy) or is refused by the port's policy and
    stays on; the VF's counters are readable throughout."""
    pf, vf = pf_target.pf, pf_target.vf
    _skip_unsupported(pf_target, VfSetting.SPOOFCHK)
    assert pf.set_vf(vf, VfSetting.SPOOFCHK, True).spoofchk is True
    counters = pf.vf_counters(vf)
    assert {"rx_packets", "tx_packets"} <= set(counters), counters
    try:
        assert pf.set_vf(vf, VfSetting.SPOOFCHK, False).spoofchk is False
        assert not pf_target.port_policy, "the port policy let spoof checking be turned off"
    except PfControlError as err:
        assert pf_target.port_policy and err.reason == REFUSED, str(err)
        assert pf.vf_config(vf).spoofchk is True
    assert pf.set_vf(vf, VfSetting.SPOOFCHK, True).spoofchk is True
    assert all(v >= 0 for v in pf.vf_counters(vf).values())
