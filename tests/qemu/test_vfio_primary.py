"""A real VF as a failover guest's primary (lab hosts): QEMU's command line and the
steering commands, as pure functions. The whole path (a nested guest taking a vfio-pci
VF of the QEMU igb host) is in ``tests/sriov/test_vfio_failover_guest.py``."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from bench.qemu import host_net, steering_watch
from bench.qemu.failover_vm import (
    PRIMARY_ID,
    PRIMARY_PORT,
    STANDBY_ID,
    FailoverVm,
    PrimaryVf,
    VmFiles,
    primary_device,
    qemu_arguments,
)
from bench.qemu.guest_net import parse_netdevs

MAC = "02:4e:52:00:01:01"
VF = PrimaryVf(pf_pci="0000:01:00.0", pf_netdev="eth1", vf=1, pci="0000:01:10.2")


def _vm(vf: PrimaryVf | None, model: str | None = None) -> FailoverVm:
    return FailoverVm(
        guest="vm1",
        mac=MAC,
        address="198.19.30.101/24",
        standby_tap="q0s0",
        primary_tap="q0p0",
        primary_model=model,
        primary_vf=vf,
    )


def _devices(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == "-device"]


def test_a_vf_primary_is_a_vfio_pci_device_paired_with_the_standby() -> None:
    vm = _vm(VF)
    argv = qemu_arguments(vm, Path("/img"), VmFiles(Path("/run/x"), "vm1"), "tcg")
    primary = [d for d in _devices(argv) if d.startswith("vfio-pci,")]
    assert primary == [
        f"vfio-pci,host={VF.pci},id={PRIMARY_ID},bus={PRIMARY_PORT},"
        f"failover_pair_id={STANDBY_ID},romfile="
    ]
    # no TAP of its own: the VF is the NIC; its MAC is the PF's to set
    assert not any(a.startswith("tap,id=pr,") for a in argv), argv
    assert "mac=" not in primary[0]
    assert vm.has_primary and vm.taps == ("q0s0",) and vm.primary_port == "eth1"
    assert primary_device(vm)["driver"] == "vfio-pci"


def test_an_emulated_primary_keeps_its_tap_and_model() -> None:
    vm = _vm(None, model="e1000e")
    argv = qemu_arguments(vm, Path("/img"), VmFiles(Path("/run/x"), "vm1"), "tcg")
    assert "tap,id=pr,ifname=q0p0,script=no,downscript=no" in argv
    assert any(d.startswith("e1000e,") and f"mac={MAC}" in d for d in _devices(argv))
    assert vm.taps == ("q0s0", "q0p0") and vm.primary_port == "q0p0"


def test_no_primary_without_a_model_or_a_vf() -> None:
    vm = _vm(None)
    argv = qemu_arguments(vm, Path("/img"), VmFiles(Path("/run/x"), "vm1"), "tcg")
    assert not vm.has_primary
    assert [d.split(",", 1)[0] for d in _devices(argv)] == ["virtio-net-pci", "pcie-root-port"]


def test_steering_to_a_vf_gives_it_the_mac_before_the_bridge_moves() -> None:
    commands = host_net.steer_commands(MAC, "eth1", ("q0s0",), vf=VF, to_vf=True)
    assert commands == [
        "bridge link set dev q0s0 learning off",
        f"ip link set dev eth1 vf 1 mac {MAC}",
        f"{{ bridge fdb del {MAC} dev eth1 self 2>/dev/null; true; }}",
        f"bridge fdb replace {MAC} dev eth1 master static",
    ]


def test_steering_to_the_standby_gives_the_mac_from_the_vf_to_the_pf() -> None:
    commands = host_net.steer_commands(MAC, "q0s0", ("q0s0",), vf=VF, to_vf=False)
    assert commands == [
        "bridge link set dev q0s0 learning off",
        f"bridge fdb replace {MAC} dev q0s0 master static",
        f"bridge fdb replace {MAC} dev eth1 self",
    ]  # the VF keeps its MAC: the guest may still hold the VF (a driver reload)


def test_steering_without_a_vf_moves_the_bridge_entry_only() -> None:
    commands = host_net.steer_commands(MAC, "q0p0", ("q0s0", "q0p0"))
    assert commands[-1] == f"bridge fdb replace {MAC} dev q0p0 master static"
    assert not any("vf" in c for c in commands)


def test_a_vf_driver_is_the_primary_net_failover_enslaved() -> None:
    """The guest's own listing (``NETDEVS_COMMAND``): the primary is the master's slave
    that is not virtio_net, whatever its driver (igbvf here), and it makes passthrough."""
    listing = (
        f"eth0 - up {MAC} - 9 9 900 900 0\n"
        f"eth1 eth0 up {MAC} virtio_net 1 1 100 100 4\n"
        "[   74.1] igbvf 0000:01:00.0: Link is Up\n"
        f"eth2 eth0 up {MAC} igbvf 3 0 330 0 0\n"
    )
    net = parse_netdevs(listing)
    assert net.primary is not None and (net.primary.name, net.primary.driver) == ("eth2", "igbvf")
    assert net.standby is not None and net.standby.name == "eth1"
    assert net.mode == "passthrough"
    assert parse_netdevs(listing.replace("eth2 eth0", "eth2 -")).mode == "emulation"


def _shell(command: str) -> str:
    """One command as the host's shell runs it: ``{ X; true; }`` and ``sh -c 'X; true'``
    are the same tolerant command."""
    return command.removeprefix("{ ").removesuffix("; }").removesuffix("; true")


@pytest.mark.parametrize("to", ["primary", "standby"])
def test_the_host_watcher_moves_a_vf_as_the_controller_does(to: str) -> None:
    """The watcher (on the host, at the kernel's word) and the controller (over SSH, when
    no watcher runs) must leave the host in the same state, in the same order."""
    watcher = steering_watch.Steering(
        MAC, {"standby": "q0s0", "primary": VF.pf_netdev}, True, (VF.pf_netdev, str(VF.vf))
    )
    heard = [_shell(c[2]) if c[0] == "sh" else shlex.join(c) for c in watcher.commands(to)]
    port = VF.pf_netdev if to == "primary" else "q0s0"
    controller = host_net.steer_commands(MAC, port, (), vf=VF, to_vf=to == "primary")
    assert heard == [_shell(c) for c in controller]
