"""Fixtures every test directory shares: the QEMU SR-IOV lab host, booted once a session."""

from tests.qemu_sriov_host import (  # noqa: F401 (fixtures, found by name)
    igb_baseline,
    igb_pf,
    igb_ssh,
    igb_vfs,
    qemu_sriov_host,
)
