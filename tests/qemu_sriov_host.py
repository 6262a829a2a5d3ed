"""The QEMU SR-IOV lab host as pytest fixtures: booted once per test session, reached only
over SSH with the bench's own driver, stopped at the end of the session (also on a
failure or Ctrl-C: pytest runs session finalizers then).

``tests/conftest.py`` makes these fixtures visible to every test directory, so the
SR-IOV tests and the conformance suite share one boot.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.qemu.accel import QEMU_BINARY
from bench.qemu.sriov_host import PF_PCI_ADDRESS, RunningSriovHost, SriovHostConfig, boot_sriov_host
from bench.ssh import SshHost
from drivers.linux_pf import LinuxPf
from drivers.pf_control import PfState

IMAGE_DIR = Path(__file__).resolve().parent.parent / "build" / "qemu-sriov-host"
#: VFs the tests work with (the igb model has 7).
TEST_VFS = 4


@pytest.fixture(scope="session")
def qemu_sriov_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSriovHost]:
    """The booted igb lab host (skipped, with the reason, where it cannot be booted)."""
    if shutil.which(QEMU_BINARY) is None:
        pytest.skip(f"no {QEMU_BINARY} (>= 10, for igb): run `make qemu`")
    if not (IMAGE_DIR / "initrd.img").is_file():
        pytest.skip(f"no QEMU SR-IOV host image in {IMAGE_DIR}: run `make qemu-sriov-image`")
    work = tmp_path_factory.mktemp("qemu-sriov-host")
    config = SriovHostConfig(
        name="igb-host", image_dir=IMAGE_DIR, work_dir=work, die_with_controller=True
    )
    host = boot_sriov_host(config)
    try:
        yield host
    finally:
        host.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def igb_ssh(qemu_sriov_host: RunningSriovHost) -> Iterator[SshHost]:
    """The bench's SSH driver, connected to the igb host (one persistent shell)."""
    with SshHost(qemu_sriov_host.endpoint) as host:
        yield host


@pytest.fixture(scope="session")
def igb_pf(igb_ssh: SshHost) -> LinuxPf:
    """The igb PF, driven by the Linux PF driver."""
    return LinuxPf(igb_ssh, PF_PCI_ADDRESS)


@pytest.fixture(scope="session")
def igb_baseline(igb_pf: LinuxPf) -> PfState:
    """The PF with ``TEST_VFS`` fresh VFs, as the kernel first made them."""
    igb_pf.set_num_vfs(0)
    igb_pf.set_num_vfs(TEST_VFS)
    return igb_pf.snapshot()


@pytest.fixture
def igb_vfs(igb_pf: LinuxPf, igb_baseline: PfState) -> Iterator[LinuxPf]:
    """The PF with ``TEST_VFS`` VFs at their fresh settings, and put back so after the test."""
    igb_pf.restore(igb_baseline)
    yield igb_pf
    igb_pf.restore(igb_baseline)
