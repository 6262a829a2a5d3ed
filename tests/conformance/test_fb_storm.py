"""Fallback to emulation without migration, the switch storm: catalogue FB-06.

Back-to-back switches passthrough <-> emulation under traffic both ways
(``fallback_kit``: the schedule, the fixtures ``guest`` and ``undo``, reaching the
devices), then a look for anything leaked: VFs, interrupt vectors, buffers, netdevs.
"""

from __future__ import annotations

import json

import pytest

from bench.lab import Lab
from tests.conformance import kit
from tests.conformance.fallback_kit import (
    UndoList,
    assert_exact,
    assert_gap_below_blackout,
    back_to_passthrough,
    guest_fixture,  # noqa: F401  (the fixture "guest")
    nic_guests,
    nic_snapshot,
    under_traffic,
    undo_fixture,  # noqa: F401  (the fixture "undo")
    vfs_of,
)

#: Round trips passthrough -> emulation -> passthrough of the switch storm.
STORM_ROUND_TRIPS = 15


def guest_links(lab: Lab, guest: str) -> list[tuple[int, str, str]]:
    """Every netdev of the guest: (ifindex, name, MAC); a leaked or new one shows here."""
    out = lab.host(guest).run("ip -j link show", timeout=10)
    assert out.exit_status == 0, out.stderr
    return sorted((x["ifindex"], x["ifname"], x["address"]) for x in json.loads(out.stdout))


# -- FB-06 -------------------------------------------------------------------------------


@pytest.mark.catalogue("FB-06")
@pytest.mark.requires("guests", "nic:sriov")
def test_switch_storm_keeps_the_stream_intact_and_leaks_nothing(
    lab: Lab, guest: str, undo: UndoList
) -> None:
    """Steps: under traffic both ways, switch the guest passthrough <-> emulation back to
    back, ``STORM_ROUND_TRIPS`` round trips (20+ switches).
    Verify: every switch succeeded; afterwards each NPA guest of the NIC owns exactly one
    VF and the rest are free, the vector pool is as before, the shell's buffers balance
    with none left on the VF or pending, the guest has the same netdevs, MAC and IP; the
    longest gap stays below ``blackout_ms``; every frame arrives once, in order, with its
    stamp's CRC intact (the stream's payload integrity)."""
    undo("switch back to passthrough", back_to_passthrough(lab, guest))
    netdev, links, nic_before = (
        kit.netdev(lab, guest),
        guest_links(lab, guest),
        nic_snapshot(lab, guest),
    )

    def storm() -> list[str]:
        with lab.guest_control(guest) as device:
            return [
                device.call("switch", to=mode)["mode"]
                for _ in range(STORM_ROUND_TRIPS)
                for mode in ("emulation", "passthrough")
            ]

    results, modes = under_traffic(lab, guest, storm)

    assert len(modes) >= 20, f"a storm is 20+ switches, made {len(modes)}"
    assert modes == ["emulation", "passthrough"] * STORM_ROUND_TRIPS, modes
    vfs, peers = vfs_of(lab, guest), nic_guests(lab, guest)
    owners = sorted(v["owner"] for v in vfs if v["owner"])
    assert owners == sorted(peers), f"each NPA guest ({peers}) must own one VF, owners: {owners}"
    states = sorted(v["state"] for v in vfs)
    assert states == sorted(["active"] * len(peers) + ["free"] * (len(vfs) - len(peers))), states
    assert nic_snapshot(lab, guest) == nic_before, "VFs or interrupt vectors leaked"
    buffers = kit.driver_status(lab, guest)["buffers"]
    assert (buffers["balanced"], buffers["vf-tx"], buffers["pending"]) == (1, 0, 0), buffers
    assert kit.netdev(lab, guest) == netdev, "the guest's netdev, MAC or IP changed"
    assert guest_links(lab, guest) == links, "the guest's set of netdevs changed"
    assert_gap_below_blackout(lab, results, f"storm of {len(modes)} switches")
    assert_exact(results, f"storm of {len(modes)} switches")
