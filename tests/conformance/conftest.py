"""Fixtures of the data-path tests (DP-01 .. DP-11, ``test_dp_*.py``), and those of the
live-migration tests (``migration_kit``) made visible here.

The tests share one lab. ``cleanup`` puts every NPA guest on the guest's NIC in
passthrough before a test, runs the undo steps a test registered next to each change
(newest first) afterwards, and fails the test's teardown if a guest's port
configuration is not what it found.

Every conformance module sees these fixtures, so none is autouse: a test gets one only
by naming it, and a module's own fixture of the same name (the ``guest`` that the
``test_fb_*`` modules import from ``fallback_kit``) takes precedence.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.lab import Lab
from tests.conformance import kit
from tests.conformance.data_path_kit import Cleanup, lab_view, sharing_nic
from tests.conformance.migration_kit import (  # the LM tests' fixtures (test_lm_*.py)
    homecoming,  # noqa: F401
    hypervisor_fixture,  # noqa: F401  ("hv")
    judged_fixture,  # noqa: F401  ("judged")
    migratable_fixture,  # noqa: F401  ("migratable")
)


@pytest.fixture
def guest(lab: Lab) -> str:
    """The first guest that can use a VF (npa mode, host NIC with VFs)."""
    guests = kit.npa_guests(lab)
    if not guests:
        pytest.skip("no guest in npa mode on a host with an SR-IOV NIC")
    return guests[0]


@pytest.fixture
def neighbour(lab: Lab, guest: str) -> str:
    """Another NPA guest on the same host and NIC as ``guest``."""
    others = sharing_nic(lab, guest)[1:]
    if not others:
        pytest.skip(f"no second NPA guest on {guest}'s NIC")
    return others[0]


@pytest.fixture
def cleanup(lab: Lab, guest: str) -> Iterator[Cleanup]:
    """The guests on ``guest``'s NIC in passthrough before; after, the test's undo steps,
    those guests in passthrough again and as they were found (else the teardown fails)."""
    guests = sharing_nic(lab, guest)
    for name in guests:
        kit.ensure_passthrough(lab, name)
    found = lab_view(lab, guests)
    undo = Cleanup()
    yield undo
    failures = undo.run()
    for name in guests:
        try:
            kit.ensure_passthrough(lab, name)
        except AssertionError as err:
            failures.append(str(err))
    left = lab_view(lab, guests)
    failures += [f"{k}: left as {left[k]}, found as {v}" for k, v in found.items() if left[k] != v]
    assert not failures, "the test did not leave the lab as it found it:\n" + "\n".join(failures)
