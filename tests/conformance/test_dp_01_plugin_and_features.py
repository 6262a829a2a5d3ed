"""Conformance DP-01 and DP-06: the plugin and the features a guest's VF is driven with.

DP-01: the plugin loaded is the one the VF's NIC model names, and a mismatched one is
refused (the guest stays in emulation). DP-06: the driver uses only features the VF
offers, and a VF offering none leaves the guest in emulation. Helpers:
``data_path_kit``; fixtures: ``conftest.py``. The rates below are test parameters, not
pass criteria.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.lab import Lab
from bench.traffic.engine import run_flows
from nic_emulators.control import ControlError
from nic_emulators.models import MODELS
from tests.conformance import kit
from tests.conformance.data_path_kit import (
    Cleanup,
    both_exact,
    driver_call,
    nic_call,
    nic_model,
    owned_vfs,
    put_in,
    vf_state,
)

#: Short exactness checks (a guest in emulation after a refusal or a fault).
CHECK_PPS = 2000
CHECK_SECONDS = 0.5


# -- DP-01 -------------------------------------------------------------------------------


@pytest.mark.catalogue("DP-01")
@pytest.mark.requires("guests", "nic:sriov")
def test_dp01_the_plugin_the_vf_names_is_loaded(lab: Lab, guest: str, cleanup: Cleanup) -> None:
    """Steps: read the guest's device, its driver and its NIC. Verify: in passthrough, the
    plugin loaded is the one the NIC's model names for its VFs, and it drives the VF the
    device holds."""
    model = nic_model(lab, guest)
    status = kit.status(lab, guest)
    driver = kit.driver_status(lab, guest)
    assert (status["mode"], status["plugin"]) == ("passthrough", model.plugin), status
    assert (driver["plugin"], driver["tx_path"]) == (model.plugin, "vf"), driver
    vf = vf_state(lab, guest, status["vf"])
    assert (vf["state"], vf["owner"]) == ("active", guest), vf


@pytest.mark.catalogue("DP-01")
@pytest.mark.requires("guests", "nic:sriov")
@pytest.mark.parametrize("mismatch", ["another-vendor", "old-major-version"])
def test_dp01_a_mismatched_plugin_is_refused_and_the_guest_stays_in_emulation(
    lab: Lab, guest: str, cleanup: Cleanup, mismatch: str
) -> None:
    """Steps: install, under the name the VF asks for, another vendor's plugin (or an old
    major version of the right one); switch to emulation, then ask for passthrough; send
    traffic; remove the override and ask again. Verify: the switch is refused with the
    loader's reason, the VF is released, the guest stays in emulation with a reason naming
    the refusal and carries traffic exactly; with the right plugin it returns to passthrough."""
    model = nic_model(lab, guest)
    if mismatch == "another-vendor":
        other = next(m for m in MODELS.values() if m.vendor != model.vendor)
        module = f"drivers.plugins.{other.plugin}"
        refusal = f"(vendor {other.vendor}) is not the plugin {model.plugin!r}"
    elif model.plugin == "alpha":
        module = "drivers.plugins.alpha_legacy"
        refusal = f"needs version {model.plugin_version} (major version differs)"
    else:
        pytest.skip(f"an old build exists for the alpha plugin only, not {model.plugin}")
    driver_call(lab, guest, "install-plugin", name=model.plugin, module=module)
    cleanup.defer(
        "plugin override",
        lambda: driver_call(lab, guest, "install-plugin", name=model.plugin, module=None),
    )
    put_in(lab, guest, "emulation")
    with pytest.raises(ControlError) as refused:
        kit.switch(lab, guest, "passthrough")
    assert refusal in str(refused.value), (
        f"the switch failed, but not for the plugin: {refused.value}"
    )
    status = kit.wait_mode(lab, guest, "emulation")
    assert "refused the VF" in status["reason"] and refusal in status["reason"], status["reason"]
    assert status["vf"] is None and owned_vfs(lab, guest) == [], "the refused VF must be released"
    assert any(refusal in e for e in kit.driver_status(lab, guest)["errors"]), (
        "the guest must log it"
    )
    both_exact(run_flows(lab, kit.both_ways(lab, guest, CHECK_PPS, CHECK_SECONDS)), "in emulation")
    driver_call(lab, guest, "install-plugin", name=model.plugin, module=None)
    back = kit.switch(lab, guest, "passthrough")
    assert back["mode"] == "passthrough", back
    assert kit.status(lab, guest)["plugin"] == model.plugin


# -- DP-06 -------------------------------------------------------------------------------


def negotiated(lab: Lab, guest: str) -> tuple[set[str], dict[str, Any]]:
    """(features the guest's driver uses, its VF as the NIC sees it), in passthrough."""
    status = kit.status(lab, guest)
    assert status["mode"] == "passthrough", status["reason"]
    return set(kit.driver_status(lab, guest)["features"]), vf_state(lab, guest, status["vf"])


@pytest.mark.catalogue("DP-06")
@pytest.mark.requires("guests", "nic:sriov")
def test_dp06_only_offered_features_are_enabled_and_no_capability_means_emulation(
    lab: Lab, guest: str, cleanup: Cleanup
) -> None:
    """Steps: read what the guest's driver uses and what its VF offers and has enabled; make
    the NIC's VFs offer one feature less, switch out and back; make them offer nothing,
    switch out and ask for passthrough; send traffic; restore the features. Verify: the
    driver uses, and the VF has enabled, only offered features (never the one withdrawn);
    with no capability the switch is refused, the guest stays in emulation with that reason
    and carries traffic exactly; with the features back it returns to passthrough."""
    used, vf = negotiated(lab, guest)
    offered = list(vf["offered"])
    assert used <= set(offered) and set(vf["enabled"]) == used, f"uses {used}, VF {vf}"
    assert used, f"the driver uses none of {offered}: nothing to withdraw"
    cleanup.defer("VF features", lambda: nic_call(lab, guest, "SET_VF_FEATURES", features=offered))
    withdrawn = sorted(used)[-1]
    nic_call(lab, guest, "SET_VF_FEATURES", features=[f for f in offered if f != withdrawn])
    put_in(lab, guest, "emulation")
    put_in(lab, guest, "passthrough")
    now, vf = negotiated(lab, guest)
    assert withdrawn not in now and withdrawn not in vf["enabled"], (
        f"{withdrawn} is no longer offered, yet the driver uses {now}, the VF has {vf['enabled']}"
    )
    assert now <= set(vf["offered"]) and set(vf["enabled"]) <= set(vf["offered"]), vf
    nic_call(lab, guest, "SET_VF_FEATURES", features=[])
    put_in(lab, guest, "emulation")
    with pytest.raises(ControlError) as refused:
        kit.switch(lab, guest, "passthrough")
    status = kit.wait_mode(lab, guest, "emulation")
    assert "no usable capability" in status["reason"], (refused.value, status["reason"])
    assert owned_vfs(lab, guest) == [], "the VF without capabilities must be released"
    both_exact(run_flows(lab, kit.both_ways(lab, guest, CHECK_PPS, CHECK_SECONDS)), "emulation")
    nic_call(lab, guest, "SET_VF_FEATURES", features=offered)
    put_in(lab, guest, "passthrough")
    assert negotiated(lab, guest)[0] == used
