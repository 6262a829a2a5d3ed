"""Conformance DP-11: a misbehaving plugin is contained.

The guest's plugin breaks (a bad buffer, an index outside the ring, no completions)
while a neighbour guest on the same NIC carries traffic: the fault is detected, the
guest falls back to emulation and stays reachable, the neighbour is not disturbed.
Helpers: ``data_path_kit``, ``data_path_probes``; fixtures: ``conftest.py``.
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from bench.lab import Lab
from tests.conformance import kit
from tests.conformance.data_path_kit import Cleanup, both_exact, driver_call, nic_model, vf_state
from tests.conformance.data_path_probes import data_address

# -- DP-11 -------------------------------------------------------------------------------


#: The device's quarantine code for each fault, per vendor (None: the shell's TX watchdog
#: detects it, the device sees nothing wrong).
FAULT_CODES: dict[str, dict[str, str | None]] = {
    "alpha": {"bad-buffer": "bad-address", "outside-ring": "bad-index", "no-complete": None},
    "beta": {"bad-buffer": "bad-buffer-id", "outside-ring": "bad-index", "no-complete": None},
    "gamma": {"bad-buffer": "bad-address", "outside-ring": "bad-index", "no-complete": None},
}


def pings(lab: Lab, source: str, to: str, count: int) -> int:
    """Echo replies ``source`` got of ``count`` pings to ``to``'s data address."""
    address = shlex.quote(data_address(lab, to)[1])
    out = lab.host(source).run(f"ping -n -q -c {count} -i 0.05 -W 1 {address}", timeout=30)
    for line in out.stdout.splitlines():
        if " received" in line:
            return int(line.split(" received")[0].rsplit(" ", 1)[-1])
    raise AssertionError(f"ping from {source} printed no summary: {out.stdout} {out.stderr}")


@pytest.mark.catalogue("DP-11")
@pytest.mark.requires("guests:2", "nic:sriov")
@pytest.mark.parametrize("fault", ["bad-buffer", "outside-ring", "no-complete"])
def test_dp11_a_misbehaving_plugin_is_contained(
    lab: Lab, guest: str, neighbour: str, cleanup: Cleanup, fault: str
) -> None:
    """Steps: sequenced traffic between the generator and a neighbour guest on the same NIC;
    meanwhile the guest's plugin starts misbehaving (``fault``) and the guest pings the
    generator. Verify: the fault is detected (the NIC quarantines the VF with the matching
    fault code, or the shell's TX watchdog fires), the VF is released, the guest falls back
    to emulation with a runtime-error reason and stays reachable, its buffers balance; the
    neighbour's traffic is exact and it keeps its VF in passthrough."""
    gen = kit.generator(lab)
    vf = kit.status(lab, guest)["vf"]
    neighbour_vf = kit.status(lab, neighbour)["vf"]
    vendor = nic_model(lab, guest).vendor
    if vendor not in FAULT_CODES:
        pytest.skip(f"which fault codes a {vendor} VF reports is not known to this test")
    code = FAULT_CODES[vendor][fault]
    cleanup.defer("plugin fault", lambda: driver_call(lab, guest, "plugin-fault", fault=None))

    def break_plugin() -> tuple[int, dict[str, Any]]:
        driver_call(lab, guest, "plugin-fault", fault=fault)
        replied = pings(lab, guest, gen, 20)  # its frames meet the broken plugin
        return replied, kit.wait_mode(lab, guest, "emulation")

    results, (replied, status) = kit.traffic_during(
        lab, kit.both_ways(lab, neighbour, 4000, 2.0), break_plugin, start_after_s=0.3
    )
    both_exact(results, f"{neighbour} while {guest}'s plugin broke ({fault})")
    assert kit.status(lab, neighbour)["vf"] == neighbour_vf, f"{neighbour} lost its VF"
    assert status["reason"].startswith("runtime error"), status["reason"]
    released = vf_state(lab, guest, vf)
    assert (released["state"], released["owner"]) == ("free", None), released
    if code is None:
        assert "TX timeout" in status["reason"], status["reason"]
    else:
        found = (released.get("fault") or {}).get("code")
        assert found == code, f"the NIC must quarantine VF {vf} for {code}: {released}"
    assert replied > 0, f"{guest} got no reply to 20 pings through the fault"
    assert pings(lab, guest, gen, 5) == 5, f"{guest} is not reachable in emulation"
    driver = kit.driver_status(lab, guest)
    assert driver["errors"] and driver["buffers"]["balanced"] == 1, driver
