"""Migrations that must not happen, and leave the guest where it was: LM-04, LM-05, LM-06.

A cancel while the guest is letting go of its VF (LM-04), a destination that fails
at stop-and-copy (LM-05) and a guest that never lets go of its VF (LM-06) each end
with the guest running on the source in passthrough, within a bound, and the traffic
both ways delivered exactly (nothing lost: the guest never left).
"""

from __future__ import annotations

import time

import pytest

from bench.hypervisor import Hypervisor
from bench.lab import Lab
from bench.migration import Expectation, migrate_under_traffic
from tests.conformance.migration_kit import (
    Judge,
    destination,
    plan,
    release_lever,
)

pytestmark = [
    pytest.mark.requires("guests", "role:traffic-generator"),
    pytest.mark.usefixtures("homecoming"),
]


def wait_event(hv: Hypervisor, guest: str, name: str, since: float, timeout: float) -> float:
    """When the hypervisor recorded ``name`` for ``guest`` after ``since`` (epoch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in hv.events(guest):
            if event.name == name and event.t >= since:
                return event.t
        time.sleep(0.01)
    raise AssertionError(f"{guest}: no {name!r} event within {timeout} s")


@pytest.mark.catalogue("LM-04")
def test_lm_04_cancel_while_waiting_for_vf_release(
    judged: Judge, lab: Lab, migratable: str
) -> None:
    """Steps: the guest takes its time to release the VF (half the release bound); cancel
    the migration once the hypervisor asked for the VF.
    Verify: cancelled; the guest stays on the source in passthrough; the cancel took
    effect within the release bound; no frame lost."""
    bound = float(lab.topology.limits.vf_release_timeout_s)
    release_lever(lab, migratable, "delay", delay_ms=bound * 500)
    target = destination(lab, migratable)
    cancelled_at: list[float] = []
    started = time.time()

    def cancel(hv: Hypervisor) -> None:
        wait_event(hv, migratable, "vf-release-requested", started, timeout=bound)
        cancelled_at.append(time.time())
        hv.cancel_migration(migratable)

    run = migrate_under_traffic(
        lab,
        migratable,
        target,
        traffic=plan(seconds=bound / 2 + 2),
        during=cancel,
        expect=Expectation(outcome="cancelled"),
    )
    judged(run)
    took = run.result.finished_at - cancelled_at[0]
    assert took < bound, f"the cancel took {took:.2f} s to end the migration (bound {bound} s)"


@pytest.mark.catalogue("LM-05")
def test_lm_05_destination_fails(judged: Judge, lab: Lab, migratable: str) -> None:
    """Steps: migrate under traffic to a destination that refuses the final state.
    Verify: failed; the guest resumed on the source, passthrough restored; no frame lost
    (what arrived while it was stopped was held, not dropped)."""
    target = destination(lab, migratable)
    run = migrate_under_traffic(
        lab,
        migratable,
        target,
        traffic=plan(),
        fail_at_destination=True,
        expect=Expectation(outcome="failed"),
    )
    judged(run)
    names = [e.name for e in run.result.events if e.t >= run.result.started_at]
    assert "stop-and-copy-start" in names and "guest-resumed-on-source" in names, names
    assert "failure injected" in run.result.reason


@pytest.mark.catalogue("LM-06")
def test_lm_06_guest_never_releases_its_vf(
    judged: Judge, lab: Lab, hv: Hypervisor, migratable: str
) -> None:
    """Steps: the guest never lets go of its VF; migrate.
    Verify: the migration never enters stop-and-copy, fails at the configured bound
    (``vf_release_timeout_s``) and the guest keeps running in passthrough on the source."""
    bound = float(lab.topology.limits.vf_release_timeout_s)
    release_lever(lab, migratable, "never")
    target = destination(lab, migratable)
    run = migrate_under_traffic(
        lab,
        migratable,
        target,
        traffic=plan(seconds=bound + 2),
        expect=Expectation(outcome="failed"),
    )
    judged(run)
    names = [e.name for e in run.result.events if e.t >= run.result.started_at]
    assert "stop-and-copy-start" not in names, names
    took = run.result.finished_at - run.result.started_at
    grace = float(getattr(hv, "cancel_grace_s", 2.0))  # what the hypervisor's cancel may take
    assert bound <= took < bound + grace, f"gave up after {took:.2f} s; the bound is {bound} s"
    assert "vf_release_timeout_s" in run.result.reason
