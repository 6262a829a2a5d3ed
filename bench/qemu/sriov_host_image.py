"""The SR-IOV lab host's image: Debian's generic kernel with igb/igbvf and vfio-pci, sshd,
iproute2 and bash, and an SSH key pair that only this image and the bench know.

The guest is meant to look like a lab server to the bench: an sshd with a pinned host
key, root login by key, ``bash`` for the persistent shell and iproute2 for the real VF
commands. Its management NIC is a virtio one (user-mode networking, reached through a
host forward on 127.0.0.1); its ``igb`` NIC is the PF under test.

Run ``python -m bench.qemu.sriov_host_image DIR`` (``make qemu-sriov-image``) to build or
refresh it.

A second variant, "the igb host with hypervisor tools" (:func:`sriov_hv_spec`), is the
same host that can also run a nested QEMU guest with a vfio-pci VF as its primary (a
failover guest, as a lab hypervisor would): Debian's ``qemu-system-x86_64`` with the
firmware a ``-kernel``/``-initrd`` boot of q35 needs, ``python3`` with the few standard
modules the bench's host programs import (``steering_watch``, the socket relay of
``remote``), iproute2's ``bridge``, and the tun, bridge and 8021q modules. Its initramfs
is about three times the base one's, so the base image stays as it is. Build it with
``python -m bench.qemu.sriov_host_image --hv DIR`` (``make qemu-sriov-hv-image``), and boot
it with :func:`bench.qemu.sriov_host.boot_sriov_host` with ``image_dir`` DIR and room
for a nested guest (``memory_mb=2048, smp=2``).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from bench.errors import LabError
from bench.qemu.image_builder import GuestImage, GuestImageSpec, build_image

#: Hostname inside the guest (shows in its prompt and logs).
GUEST_HOSTNAME = "sriov-host"
#: The guest's address on QEMU's user-mode network (its default).
GUEST_ADDRESS = "10.0.2.15/24"
#: What sshd prints on the serial console once it listens (the boot is then done).
READY_LINE = "Server listening on 0.0.0.0 port 22"
CLIENT_KEY = "id_ed25519"
HOST_KEY = "ssh_host_ed25519_key"
KNOWN_HOSTS = "known_hosts"

_INITTAB = """\
::sysinit:/etc/init.d/rcS
::respawn:/usr/sbin/sshd -D -e -f /etc/ssh/sshd_config
::shutdown:/bin/umount -a -r
"""

# Finds the management NIC by its virtio vendor id: interface names depend on probe order.
_RCS = f"""\
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/sshd /var/log
chmod 0755 /run/sshd
hostname {GUEST_HOSTNAME}
while read -r module; do
  insmod "$module" || echo "rcS: insmod $module failed" > /dev/console
done < /etc/modules.load
ip link set lo up
for dev in /sys/class/net/*; do
  [ "$(cat "$dev/device/vendor" 2>/dev/null)" = 0x1af4 ] && mgmt=${{dev##*/}}
done
ip link set "$mgmt" up
ip addr add {GUEST_ADDRESS} dev "$mgmt"
for dev in /sys/class/net/*; do  # the igb PF is the server's uplink: up, as on a lab host
  case "$(readlink "$dev/device/driver")" in */igb) ip link set "${{dev##*/}}" up;; esac
done
echo "rcS: management network on $mgmt" > /dev/console
"""

_SSHD_CONFIG = f"""\
Port 22
HostKey /etc/ssh/{HOST_KEY}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile /root/.ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PidFile /run/sshd.pid
Subsystem sftp internal-sftp
"""

_PASSWD = "root:x:0:0:root:/root:/bin/bash\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"
_SHADOW = "root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\n"
_NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files\n"

#: igb (the PF) and igbvf (its VFs), vfio-pci for passthrough, virtio-net for management.
MODULES = ("virtio_pci", "virtio_net", "igb", "igbvf", "vfio_iommu_type1", "vfio-pci")

#: The hypervisor variant's packages beyond the base ones: QEMU (the version apt fetches
#: on this machine: after ``make qemu``, the same QEMU as the bench's own), its firmware
#: (qemu-system-data and seabios are not libraries, so they are named), and Python: the
#: minimal interpreter plus the full standard library's package, from which only
#: :data:`HV_PYTHON_MODULES` is taken.
HV_PACKAGES = (
    "qemu-system-x86",
    "qemu-system-data",
    "seabios",
    "python3.11-minimal",
    "libpython3.11-stdlib",
)
HV_BINARIES = ("/usr/bin/qemu-system-x86_64", "/usr/bin/python3.11", "/sbin/bridge")
#: TAPs for nested guests, a host bridge joining them to the VFs' side, 802.1Q on it.
HV_MODULES = (*MODULES, "tun", "bridge", "8021q")
#: The firmware a ``-kernel``/``-initrd`` boot of q35 needs (found by trying), where
#: Debian's QEMU looks by default (its built-in search path has both directories, so no
#: ``-L``): SeaBIOS, the ``-kernel`` loader ROM and the APIC's TPR-patching ROM (QEMU
#: loads it under TCG too). NICs need ``romfile=`` (no iPXE ROMs in the image); no VGA.
HV_FIRMWARE = (
    "/usr/share/seabios/bios-256k.bin",
    "/usr/share/qemu/linuxboot_dma.bin",
    "/usr/share/qemu/kvmvapic.bin",
)
_PYTHON_LIB = "/usr/lib/python3.11"
#: The standard modules (pure Python: Debian builds select, _socket, _posixsubprocess
#: and the like into the interpreter) that python3's start-up (``site``) and
#: ``import os, select, socket, sys, json, re, subprocess, time, shlex`` load.
HV_PYTHON_MODULES = (
    "__future__.py", "_collections_abc.py", "_sitebuiltins.py", "_weakrefset.py", "abc.py",
    "codecs.py", "collections", "contextlib.py", "copyreg.py", "encodings/__init__.py",
    "encodings/aliases.py", "encodings/ascii.py", "encodings/latin_1.py",
    "encodings/utf_8.py", "enum.py", "functools.py", "genericpath.py", "io.py", "json",
    "keyword.py", "locale.py", "operator.py", "os.py", "posixpath.py", "re", "reprlib.py",
    "selectors.py", "shlex.py", "signal.py", "site.py", "socket.py", "stat.py",
    "subprocess.py", "threading.py", "types.py", "warnings.py",
    # json's C accelerator (it needs only libc); without a lib-dynload directory python3
    # also warns "Could not find platform dependent libraries" on every start.
    "lib-dynload/_json.cpython-311-x86_64-linux-gnu.so",
)  # fmt: skip

#: Under TCG the emulated intel-iommu has no interrupt remapping (``intremap=off``), and
#: VFIO refuses such an IOMMU unless told it may: without this, QEMU's vfio-pci fails
#: with "Failed to set iommu for container: Operation not permitted". A lab host with a
#: real IOMMU would not need it; this emulated one cannot do better.
_RCS_HV = """\
echo 1 > /sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts
"""


def _keygen(path: Path) -> None:
    """An ed25519 key pair at ``path`` (and ``.pub``), made once and kept."""
    if path.exists():
        return
    done = subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            f"npabench-{path.name}",
            "-f",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise LabError(f"guest image: ssh-keygen failed: {done.stderr.strip()}")


def sriov_host_spec(directory: Path) -> GuestImageSpec:
    """The image spec; makes the client and host keys in ``directory`` if missing.

    The keys live beside the image (git-ignored, never shipped): the bench logs in
    with ``id_ed25519`` and pins the host key through ``known_hosts``, which files it
    under ``[127.0.0.1]:*`` because the forwarded port is picked at boot.
    """
    directory.mkdir(parents=True, exist_ok=True)
    _keygen(directory / CLIENT_KEY)
    _keygen(directory / HOST_KEY)
    host_public = (directory / f"{HOST_KEY}.pub").read_text().split()
    (directory / KNOWN_HOSTS).write_text(f"[127.0.0.1]:* {host_public[0]} {host_public[1]}\n")
    return GuestImageSpec(
        name="qemu-sriov-host",
        packages=("openssh-server", "iproute2", "bash", "busybox-static"),
        binaries=("/usr/sbin/sshd", "/bin/ip", "/bin/bash"),
        modules=MODULES,
        files={
            "/etc/inittab": (0o644, _INITTAB.encode()),
            "/etc/init.d/rcS": (0o755, _RCS.encode()),
            "/etc/ssh/sshd_config": (0o644, _SSHD_CONFIG.encode()),
            f"/etc/ssh/{HOST_KEY}": (0o600, (directory / HOST_KEY).read_bytes()),
            "/root/.ssh/authorized_keys": (0o600, (directory / f"{CLIENT_KEY}.pub").read_bytes()),
            "/etc/passwd": (0o644, _PASSWD.encode()),
            "/etc/group": (0o644, _GROUP.encode()),
            "/etc/shadow": (0o600, _SHADOW.encode()),
            "/etc/nsswitch.conf": (0o644, _NSSWITCH.encode()),
            "/etc/hostname": (0o644, f"{GUEST_HOSTNAME}\n".encode()),
        },
        symlinks={
            "/init": "/bin/busybox",
            "/sbin/ip": "/bin/ip",
            "/usr/sbin/nologin": "/bin/false",
        },
    )


def sriov_hv_spec(directory: Path) -> GuestImageSpec:
    """The hypervisor variant's spec: the base spec (its own keys in ``directory``) plus
    QEMU, its firmware, python3, ``bridge`` and the modules nested guests need."""
    base = sriov_host_spec(directory)
    return dataclasses.replace(
        base,
        name="qemu-sriov-hv",
        packages=(*base.packages, *HV_PACKAGES),
        binaries=(*base.binaries, *HV_BINARIES),
        modules=HV_MODULES,
        data=(*HV_FIRMWARE, *(f"{_PYTHON_LIB}/{module}" for module in HV_PYTHON_MODULES)),
        files={**base.files, "/etc/init.d/rcS": (0o755, (_RCS + _RCS_HV).encode())},
        symlinks={**base.symlinks, "/usr/bin/python3": "python3.11"},
    )


def build_sriov_host_image(directory: Path) -> GuestImage:
    """Build (or find up to date) the SR-IOV host image in ``directory``."""
    return build_image(sriov_host_spec(directory), directory)


def build_sriov_hv_image(directory: Path) -> GuestImage:
    """Build (or find up to date) the hypervisor variant in ``directory``."""
    return build_image(sriov_hv_spec(directory), directory)


def main(argv: list[str]) -> int:
    hv = argv[:1] == ["--hv"]
    if hv:
        argv = argv[1:]
    if len(argv) != 1:
        print("usage: python -m bench.qemu.sriov_host_image [--hv] DIRECTORY", file=sys.stderr)
        return 2
    try:
        (build_sriov_hv_image if hv else build_sriov_host_image)(Path(argv[0]))
    except LabError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
