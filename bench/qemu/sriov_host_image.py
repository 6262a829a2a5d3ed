"""The SR-IOV lab host's image: Debian's generic kernel with igb/igbvf and vfio-pci, sshd,
iproute2 and bash, and an SSH key pair that only this image and the bench know.

The guest is meant to look like a lab server to the bench: an sshd with a pinned host
key, root login by key, ``bash`` for the persistent shell and iproute2 for the real VF
commands. Its management NIC is a virtio one (user-mode networking, reached through a
host forward on 127.0.0.1); its ``igb`` NIC is the PF under test.

Run ``python -m bench.qemu.sriov_host_image DIR`` (``make qemu-sriov-image``) to build or
refresh it.
"""

from __future__ import annotations

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


def build_sriov_host_image(directory: Path) -> GuestImage:
    """Build (or find up to date) the SR-IOV host image in ``directory``."""
    return build_image(sriov_host_spec(directory), directory)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.qemu.sriov_host_image DIRECTORY", file=sys.stderr)
        return 2
    try:
        build_sriov_host_image(Path(argv[0]))
    except LabError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
