"""QEMU failover guests on a lab host: a real VF as the guest's primary, through vfio-pci.

``npabench up topologies/qemu-vfio-lab.yaml`` boots the bench's QEMU igb host in its
variant with hypervisor tools (``make qemu-sriov-hv-image``) as a ``backend: lab``
server, and on it a failover guest whose primary is VF 0 of the igb PF (QEMU inside
QEMU, both TCG: the guest takes about 2-3 minutes to boot). VF 1, moved into a
namespace of the host, is the guest's peer on the same NIC: its frames reach the guest
through the NIC's embedded switch, to the guest's VF while the guest holds it and to
the PF (then the bridge and the standby's TAP) while it does not.

Slow, so not part of ``make test``: ``make test-vfio-lab`` runs it
(``NPABENCH_VFIO_LAB=1``); without that it skips, saying so.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.hypervisor.qemu import QemuHypervisor
from bench.lab import Lab, bring_down, bring_up
from bench.lab.remote_guests import remote_root, undo_remote_guests
from bench.qemu.guests import Instance
from bench.ssh import SshHost

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = REPO / "topologies" / "qemu-vfio-lab.yaml"
IMAGE = REPO / "build" / "qemu-sriov-hv" / "initrd.img"
GUEST, HOST, PF = "vm1", "igb-hv", "eth1"
GUEST_MAC, GUEST_IP = "02:4e:52:00:31:01", "198.19.31.101"
GUEST_VF, PEER_VF = "0000:01:10.0", "0000:01:10.2"
PEER_NS, PEER_IP = "npbpeer", "198.19.31.99/24"
PINGS = 5

pytestmark = pytest.mark.skipif(
    os.environ.get("NPABENCH_VFIO_LAB") != "1",
    reason="a nested QEMU guest takes minutes under TCG: run `make test-vfio-lab`",
)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if not IMAGE.is_file():
        pytest.fail(f"no image {IMAGE}: run `make qemu-sriov-hv-image`")
    up = bring_up(TOPOLOGY, progress=lambda line: print(f"npabench: {line}", flush=True))
    try:
        yield up
    finally:
        up.close()
        bring_down(TOPOLOGY)


def _run(host: SshHost, command: str) -> str:
    result = host.run(command, timeout=60.0)
    assert result.exit_status == 0, f"{command}: exit {result.exit_status}: {result.stderr}"
    return result.stdout


def _vf_mac(host: SshHost, vf: int) -> str:
    link = json.loads(_run(host, f"ip -j link show {PF}"))[0]
    return str(link["vfinfo_list"][vf]["address"])


def _driver(host: SshHost, pci: str) -> str:
    return _run(host, f"readlink /sys/bus/pci/devices/{pci}/driver || true").strip().split("/")[-1]


def _fdb(host: SshHost) -> set[str]:
    """Where the guest's MAC is in the host's FDB: bridge ports (``master``) and the PF's
    own unicast filter (``self``)."""
    where = set()
    for entry in json.loads(_run(host, "bridge -j fdb show")):
        if entry.get("mac") == GUEST_MAC:
            where.add(f"{entry['ifname']} {'master' if entry.get('master') else 'self'}")
    return where


def _peer(host: SshHost) -> None:
    """VF 1 of the same PF, in a namespace of its own, with carrier (igbvf polls it)."""
    netdev = _run(host, f"ls /sys/bus/pci/devices/{PEER_VF}/net").split()[0]
    _run(
        host,
        f"ip netns add {PEER_NS} && ip link set {netdev} netns {PEER_NS} && "
        f"ip -n {PEER_NS} addr add {PEER_IP} dev {netdev} && "
        f"ip -n {PEER_NS} link set {netdev} up && i=0; "
        f'until [ "$(ip netns exec {PEER_NS} cat /sys/class/net/{netdev}/carrier)" = 1 ]; do '
        f"i=$((i+1)); [ $i -lt 200 ] || exit 1; sleep 0.05; done",
    )


def _ping(host: SshHost) -> int:
    """Echo replies the guest sent the peer, of ``PINGS``."""
    said = host.run(f"ip netns exec {PEER_NS} ping -c {PINGS} -W 5 {GUEST_IP}", timeout=60.0).stdout
    found = re.search(r"(\d+) packets received", said)
    assert found is not None, said
    return int(found.group(1))


def _rx(hv: QemuHypervisor, instance: Instance, slave: str) -> int:
    """Frames the guest received on its ``primary`` or ``standby`` (its own counters)."""
    net = hv.guests.net(instance)
    netdev = net.primary if slave == "primary" else net.standby
    assert netdev is not None, (slave, net)
    return netdev.counters["rx_packets"]


def test_a_guest_takes_a_real_vf_falls_back_to_its_standby_and_takes_it_again(lab: Lab) -> None:
    """Steps: up (the guest boots with VF 0 as its primary); ping it from VF 1; revoke its
    VF; ping; offer it back; ping; undo the lab host as teardown does first. Verify:
    in passthrough the primary is the igbvf driver on VF 0 (vfio-pci on the host, the
    guest's MAC on the VF, the bridge sends it out of the PF) and the pings come in on
    the primary; revoked, the VF's MAC is cleared, the MAC is in the PF's own filter and
    on the standby's TAP, and the pings come in on the standby; back, as at first; the
    timeline shows each step; the undo leaves no QEMU, TAP, bridge, VF binding, filter
    entry or file of the lab on the host."""
    hv = QemuHypervisor(lab)
    host = lab.host(HOST)
    instance = hv.guests.current(GUEST)
    status = hv.status(GUEST)
    assert (status["mode"], status["plugin"]) == ("passthrough", "igbvf"), status
    assert _driver(host, GUEST_VF) == "vfio-pci"
    assert _vf_mac(host, 0) == GUEST_MAC
    assert _fdb(host) == {f"{PF} master"}

    _peer(host)
    before = _rx(hv, instance, "primary")
    assert _ping(host) == PINGS
    assert _rx(hv, instance, "primary") - before >= PINGS

    hv.revoke_vf(GUEST)
    assert hv.status(GUEST)["mode"] == "emulation"
    assert _vf_mac(host, 0) == "00:00:00:00:00:00"
    assert _fdb(host) == {f"{instance.vm.standby_tap} master", f"{PF} self"}
    before = _rx(hv, instance, "standby")
    assert _ping(host) == PINGS
    assert _rx(hv, instance, "standby") - before >= PINGS

    hv.offer_vf(GUEST)
    assert hv.status(GUEST)["mode"] == "passthrough"
    assert _vf_mac(host, 0) == GUEST_MAC
    assert _fdb(host) == {f"{PF} master"}
    before = _rx(hv, instance, "primary")
    assert _ping(host) == PINGS
    assert _rx(hv, instance, "primary") - before >= PINGS

    names = [e.name for e in hv.events(GUEST)]
    steps = ["vf-revoke", "primary-unregistered", "emulation-active", "vf-offer",
             "primary-registered", "primary-steered", "passthrough-active"]  # fmt: skip
    assert [n for n in names if n in steps] == steps, names
    moved = {e.name: e.details.get("steered") for e in hv.events(GUEST)}
    assert moved["primary-unregistered"] == "standby" and moved["primary-registered"] == "primary"

    _run(host, f"ip netns del {PEER_NS}")
    hv.drop_monitor(instance)
    undone = undo_remote_guests(lab.state, lambda line: print(line, flush=True))
    assert len(undone) == 2, undone  # the guest's instance, the host's bridge
    deadline = time.monotonic() + 10
    while _run(host, "ps | grep -c '[q]emu-system' || true").strip() != "0":
        assert time.monotonic() < deadline, "QEMU still runs after the undo"
        time.sleep(0.1)
    links = {link["ifname"] for link in json.loads(_run(host, "ip -j link show"))}
    assert not links & {instance.vm.standby_tap, "vmbr0"}, links
    assert _driver(host, GUEST_VF) == "igbvf"
    assert _fdb(host) == set()
    assert _run(host, f"ls -d {remote_root(lab.name)} 2>/dev/null || true").strip() == ""
