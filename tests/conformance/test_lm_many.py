"""Migrations in series and in parallel: LM-07 (ping-pong, A -> B -> C, 20 in a row) and
LM-08 (two guests at once).

Every hop must meet LM-01's verdict, and nothing may drift or leak: the port state
(MAC, filters) and the guest's netdev are the same after the last hop as before the
first; no VF is owned twice; one device process per guest (``homecoming`` checks).
"""

from __future__ import annotations

import threading

import pytest

from bench.lab import Lab
from bench.migration import MigrationRun, migrate_under_traffic
from tests.conformance import kit
from tests.conformance.migration_kit import (
    Judge,
    destination,
    leaks,
    plan,
    port_state,
    vendor_at,
)

pytestmark = [
    pytest.mark.requires("guests", "role:traffic-generator"),
    pytest.mark.usefixtures("homecoming"),
]

#: Consecutive migrations of the storm test (the issue's acceptance asks for 20).
STORM_HOPS = 20
#: The same for a QEMU guest (each hop boots a destination QEMU: seconds, under TCG).
QEMU_STORM_HOPS = 6


@pytest.mark.catalogue("LM-07")
def test_lm_07_ping_pong(judged: Judge, lab: Lab, migratable: str) -> None:
    """Steps: A -> B -> A under traffic.
    Verify: both hops pass; the guest's netdev and its port state are what they were."""
    home = lab.guest_host(migratable)
    away = destination(lab, migratable)
    netdev, port = kit.netdev(lab, migratable), port_state(lab, migratable)
    for target in (away, home):
        judged(migrate_under_traffic(lab, migratable, target, traffic=plan()))
    assert kit.netdev(lab, migratable) == netdev
    assert port_state(lab, migratable) == port


@pytest.mark.catalogue("LM-07")
def test_lm_07_across_three_vendors(judged: Judge, lab: Lab, migratable: str) -> None:
    """Steps: A -> B -> C where B's NIC is of another vendor and C's of a third (or A's).
    Verify: every hop passes with the destination's plugin loaded."""
    home = lab.guest_host(migratable)
    first = destination(lab, migratable, vendor="other")
    plugins = []
    run = migrate_under_traffic(lab, migratable, first, traffic=plan())
    judged(run)
    plugins.append(run.result.plugin)
    second = destination(lab, migratable, vendor="other", exclude=frozenset({home}))
    run = migrate_under_traffic(lab, migratable, second, traffic=plan())
    judged(run)
    plugins.append(run.result.plugin)
    vendors = {vendor_at(lab, migratable, h) for h in (first, second)}
    assert len(set(plugins)) == len(vendors) == 2, (plugins, vendors)


@pytest.mark.catalogue("LM-07")
def test_lm_07_twenty_migrations_leak_nothing(lab: Lab, migratable: str) -> None:
    """Steps: 20 consecutive migrations under traffic between two hosts (6 of a QEMU guest).
    Verify: every one passes; afterwards no leaked VF, device process, shared-memory file,
    and the guest's buffer accounting balances."""
    home = lab.guest_host(migratable)
    away = destination(lab, migratable)
    failures = []
    # A QEMU migration under TCG takes ~5 s: fewer hops keep the suite's time in bounds
    for hop in range(QEMU_STORM_HOPS if kit.qemu_guest(lab, migratable) else STORM_HOPS):
        run = migrate_under_traffic(
            lab, migratable, away if hop % 2 == 0 else home, traffic=plan(seconds=1.2, tcp=False)
        )
        if not run.verdict.passed:
            failures.append(f"hop {hop + 1}: {run.verdict.describe()}")
    assert not failures, "\n".join(failures)
    assert not leaks(lab)
    if not kit.qemu_guest(lab, migratable):  # the NPA shell's own buffer accounting
        buffers = kit.driver_status(lab, migratable)["buffers"]
        assert buffers["balanced"] == 1, buffers


@pytest.mark.catalogue("LM-08")
def test_lm_08_two_guests_at_once(judged: Judge, lab: Lab) -> None:
    """Steps: two guests of one host migrate at the same time, each under its own traffic.
    Verify: each meets LM-01's verdict; no VF is owned twice."""
    guests = kit.npa_guests(lab)
    pair = [g for g in guests if lab.guest_host(g) == lab.guest_host(guests[0])][:2]
    if len(pair) < 2:
        pytest.skip("no two NPA guests on one host")
    runs: dict[str, MigrationRun] = {}
    errors: list[BaseException] = []

    def go(guest: str, base: int) -> None:
        own = Lab(lab.topology, lab.topology_path, lab.state)
        try:
            target = destination(own, guest)
            runs[guest] = migrate_under_traffic(
                own, guest, target, traffic=plan(flow_base=base, tcp_port=5300 + base)
            )
        except BaseException as err:
            errors.append(err)
        finally:
            own.close()

    threads = [threading.Thread(target=go, args=(g, 10 * i)) for i, g in enumerate(pair)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    for run in runs.values():
        judged(run)
    assert not leaks(lab)
