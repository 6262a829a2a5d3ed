"""Bring-up of a lab's QEMU guests (hosts with ``hypervisor: qemu``).

Runs after the hosts are up (each with its sshd) and before the instruments:

1. per QEMU host, the guest bridge ``vmbr0`` over the host's uplink (the host's
   address moves to the bridge);
2. per guest, instance 0 on its topology host: its two TAPs, its QEMU (journalled
   as soon as it runs), all guests booting at once;
3. per guest, once its console says the network is configured: a failover guest
   waits for its primary (QEMU plugs it once the guest negotiated STANDBY) and is
   steered to it; a guest without a primary stays on its standby.
"""

from __future__ import annotations

import time

from bench.errors import LabError
from bench.lab.lab import Lab
from bench.lab.remote_guests import check_host_tools, record_bridge
from bench.progress import Progress
from bench.qemu.guests import Instance, QemuGuests
from bench.qemu.host_net import BRIDGE, make_bridge
from bench.topology import Host


def _uplink(host: Host) -> tuple[str, str | None, str | None]:
    """The interface the guest bridge takes over, its MAC and its address."""
    nic_link = next((n.link for n in host.nics if n.link), None)
    iface = next((i for i in host.interfaces if i.name == nic_link), host.interfaces[0])
    return iface.name, iface.mac, str(iface.address) if iface.address else None


def start_qemu_guests(lab: Lab, progress: Progress, deadline: float) -> None:
    """Boot every QEMU guest of ``lab`` and steer it; LabError (with the host) on failure."""
    topology = lab.topology
    guests = topology.qemu_guests()
    hosts = [h for h in topology.hosts if h.hypervisor == "qemu" and h.interfaces]
    if not hosts:
        return
    for host in hosts:
        uplink, mac, address = _uplink(host)
        if host.backend == "lab":  # a real server: journalled first, undone at teardown
            check_host_tools(lab.host(host.name))
            record_bridge(lab.state, lab.host(host.name), BRIDGE, uplink, address)
        make_bridge(lab.host(host.name), uplink, mac, address)
    if not guests:
        return
    runtime = QemuGuests(lab)
    try:
        started = time.monotonic()
        booted: list[Instance] = []
        for guest in guests:
            instance = runtime.boot(runtime.instance(guest.name, guest.host, 0))
            runtime.place(instance)
            booted.append(instance)
        progress(f"{len(booted)} QEMU guest(s) starting: {', '.join(g.name for g in guests)}")
        for instance in booted:
            runtime.wait_booted(instance, deadline)
            if instance.vm.has_primary:
                try:
                    runtime.wait_mode(instance, "passthrough", deadline)
                except TimeoutError as err:
                    said = runtime.qemu_log_tail(instance)
                    raise LabError(f"{err}; QEMU's log: {said}") from None
                runtime.steer(instance, "primary")
        shown = ", ".join(
            f"{i.guest} (primary {i.vm.describe_primary()})"
            if i.vm.has_primary
            else f"{i.guest} (virtio only)"
            for i in booted
        )
        progress(f"QEMU guests up in {time.monotonic() - started:.1f} s: {shown}")
    finally:
        runtime.close()
