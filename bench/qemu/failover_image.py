"""The failover guest's image: a Linux guest with ``net_failover`` and a serial command shell.

The guest is what the failover backend migrates and measures: a virtio-net NIC with
``failover=on`` (the standby; ``virtio_net`` makes the failover master beside it) and a
primary that ``net_failover`` enslaves by its MAC: an emulated ``vmxnet3`` or
``e1000e`` standing in for the VF, or on a lab host a real VF (``igbvf`` for the QEMU
igb host's). Its kernel answers ICMP itself; everything else
the bench asks (addresses, ``/sys/class/net`` state, counters) goes over the serial
console, through :class:`bench.qemu.console.GuestConsole`.

The kernel is Debian's generic one: the cloud kernel has ``virtio_net``,
``net_failover`` and ``vmxnet3`` but not ``e1000e`` (``# CONFIG_E1000E is not set``).

The guest is configured from its kernel command line (:func:`kernel_command_line`):
``npabench.name`` (hostname), ``npabench.ip`` (address/prefix of the failover master,
or of the virtio-net NIC when it has no failover pair) and optionally ``npabench.gw``.
IPv6 is off (no router solicitations, MLD or DAD frames on the wire under test).

Reading the guest (no udev: names are the kernel's ``ethN``; with a failover pair the
master is ``eth0``, the standby ``eth1``, the primary ``eth2``, but only sysfs says
which is which): the master is the netdev with ``lower_*`` links (its name is in
``/run/npabench-netdev``); a slave has a ``master`` link to it; the standby's
``phys_port_name`` reads ``sby``. The primary is enslaved while
``/sys/class/net/<master>/lower_<primary>`` exists, and net_failover sends on it while
it is also up with carrier (``operstate`` ``up``): passthrough, else emulation. Each
slave counts in ``/sys/class/net/<slave>/statistics/{rx,tx}_{packets,bytes,dropped}``;
the master's counters are the sums.

Run ``python -m bench.qemu.failover_image [DIR]`` (``make qemu-failover-image``; DIR
defaults to :data:`IMAGE_DIR_DEFAULT`) to build or refresh it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import LabError
from bench.qemu.console import console_shell_script
from bench.qemu.image_builder import GuestImage, GuestImageSpec, build_image
from bench.qemu.kernel_log import KERNEL_CONSOLE

IMAGE_DIR_DEFAULT = "build/qemu-failover-guest"
#: Printed on the serial console once networking is configured and the command shell
#: reads its input (printed again if the shell is ever restarted).
READY_LINE = "npabench-failover-guest: ready"
#: Debian's generic kernel (see the module's docstring for why not the cloud one).
KERNEL_META = "linux-image-amd64"
#: virtio-net with its failover master, the primaries the bench uses, and 802.1Q (DP-07).
MODULES = ("virtio_pci", "virtio_net", "net_failover", "vmxnet3", "e1000e", "igbvf", "8021q")
#: iproute2's own ``ip`` (busybox's has no ``maddr``, VLANs or JSON): the filter tests
#: join multicast groups and add VLANs in the guest.
IPROUTE2 = "/bin/ip"
#: The guest's command shell on ttyS0 (see :mod:`bench.qemu.console` for its protocol).
CONSOLE_SHELL = "/sbin/npabench-console"
#: Where the guest notes the netdev it configured (the failover master, or the virtio one).
NETDEV_FILE = "/run/npabench-netdev"

#: The ACPI general-purpose event QEMU raises for PCI hot-plug on q35 (and pc): its
#: ``_E01`` method notifies the slot, and Linux's acpiphp ejects (or adds) the device.
#: QEMU's q35 hot-plugs on a PCIe root port through ACPI (not native pciehp: _OSC
#: refuses PCIe hot-plug to the guest) unless ``acpi-pci-hotplug-with-bridge-support=off``.
PCI_HOTPLUG_GPE = "/sys/firmware/acpi/interrupts/gpe01"
#: Make the guest ignore hot-unplug requests (the primary is never ejected; LM-06: QEMU
#: stays in migration state ``wait-unplug``): the PCI hot-plug GPE is masked, so the
#: request stays pending in the chipset. Hot-add is not seen either while it is masked.
NEVER_EJECT_COMMAND = f"echo mask > {PCI_HOTPLUG_GPE} && grep -qw masked {PCI_HOTPLUG_GPE}"
#: Undo :data:`NEVER_EJECT_COMMAND`: the GPE is unmasked and a pending request (an eject
#: QEMU still waits for, a hot-add) is handled at once.
EJECT_AGAIN_COMMAND = f"echo unmask > {PCI_HOTPLUG_GPE} && grep -qw unmasked {PCI_HOTPLUG_GPE}"

_INITTAB = f"""\
::sysinit:/etc/init.d/rcS
ttyS0::respawn:{CONSOLE_SHELL}
::shutdown:/bin/umount -a -r
"""

# The failover master is found through sysfs, never by name: it is the netdev with
# lower_* links (net_failover enslaves the standby at once, the primary when it comes).
_RCS = f"""\
#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# the kernel's console is its own serial port (ttyS1): from here on at info level, so
# net_failover's "failover primary slave:... registered" lines reach the host at once
dmesg -n 7
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
param() {{
  for word in $(cat /proc/cmdline); do
    case "$word" in "npabench.$1="*) echo "${{word#*=}}";; esac
  done
}}
name=$(param name)
address=$(param ip)
gateway=$(param gw)
hostname "${{name:-failover-guest}}"
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
while read -r module; do
  insmod "$module" || echo "rcS: insmod $module failed"
done < /etc/modules.load
ip link set lo up
netdev=
for dev in /sys/class/net/*; do
  set -- "$dev"/lower_*
  [ -e "$1" ] && netdev=${{dev##*/}}
done
if [ -z "$netdev" ]; then
  for dev in /sys/class/net/*; do
    case "$(readlink "$dev/device/driver")" in */virtio_net) netdev=${{dev##*/}};; esac
  done
fi
if [ -z "$netdev" ]; then
  echo "rcS: no virtio-net netdev"
else
  echo "$netdev" > {NETDEV_FILE}
  ip link set "$netdev" up
  for lower in /sys/class/net/"$netdev"/lower_*; do
    [ -e "$lower" ] && ip link set "${{lower##*/lower_}}" up
  done
  [ -n "$address" ] && ip addr add "$address" dev "$netdev"
  [ -n "$gateway" ] && ip route add default via "$gateway" dev "$netdev"
  echo "rcS: $netdev ${{address:-without address}}"
fi
"""

_PASSWD = "root:x:0:0:root:/root:/bin/sh\n"
_GROUP = "root:x:0:\n"


def failover_spec() -> GuestImageSpec:
    """The image spec (everything is fixed: the guest is configured at boot)."""
    return GuestImageSpec(
        name="qemu-failover-guest",
        packages=("busybox-static", "iproute2"),
        binaries=(IPROUTE2,),
        modules=MODULES,
        files={
            "/etc/inittab": (0o644, _INITTAB.encode()),
            "/etc/init.d/rcS": (0o755, _RCS.encode()),
            CONSOLE_SHELL: (0o755, console_shell_script(READY_LINE).encode()),
            "/etc/passwd": (0o644, _PASSWD.encode()),
            "/etc/group": (0o644, _GROUP.encode()),
        },
        symlinks={"/init": "/bin/busybox"},
        kernel_meta=KERNEL_META,
    )


def build_failover_image(directory: Path) -> GuestImage:
    """Build (or find up to date) the failover guest image in ``directory``."""
    return build_image(failover_spec(), directory)


def kernel_command_line(name: str, address: str, gateway: str | None = None) -> str:
    """QEMU's ``-append`` for a guest ``name`` whose failover netdev gets ``address``
    (``10.0.0.5/24``), with a default route through ``gateway`` if given."""
    for label, value in (("name", name), ("address", address), ("gateway", gateway or "")):
        if any(c.isspace() for c in value) or '"' in value:
            raise LabError(f"failover guest: {label} {value!r} cannot go on a kernel command line")
    words = [
        f"console={KERNEL_CONSOLE}",
        "panic=-1",
        "quiet",
        f"npabench.name={name}",
        f"npabench.ip={address}",
    ]
    if gateway:
        words.append(f"npabench.gw={gateway}")
    return " ".join(words)


def tcp_echo_command(port: int) -> str:
    """Start a TCP echo server on ``port`` in the guest (busybox ``nc``: ``-ll`` keeps
    listening, one ``cat`` per connection), detached from the console."""
    return f"setsid nc -ll -p {port} -e cat </dev/null >/dev/null 2>&1 &"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.qemu.failover_image",
        description="Build the failover guest image (a no-op when it is up to date).",
    )
    parser.add_argument("directory", nargs="?", type=Path, default=Path(IMAGE_DIR_DEFAULT))
    directory: Path = parser.parse_args(argv).directory
    try:
        build_failover_image(directory)
    except LabError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
