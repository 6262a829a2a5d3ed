"""The failover guest image in real QEMU (KVM when it works here, else TCG): boot, console,
net_failover pairing, the primary's unplug and re-plug, and the never-eject lever.

Each guest boots once for its class and is always stopped (class fixture finalizer;
QEMU also dies with the test process). User-mode networking is enough to see the guest
pair and configure its NICs; the lab puts TAPs in its place.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.qemu.accel import QEMU_BINARY, usable_accelerator
from bench.qemu.console import (
    ConsoleError,
    GuestConsole,
    console_arguments,
    console_log,
    console_socket,
    wait_for_line,
)
from bench.qemu.failover_image import (
    EJECT_AGAIN_COMMAND,
    IMAGE_DIR_DEFAULT,
    NETDEV_FILE,
    NEVER_EJECT_COMMAND,
    READY_LINE,
    kernel_command_line,
    tcp_echo_command,
)
from bench.qemu.kernel_log import kernel_log_arguments, kernel_log_file, primary_event
from bench.qemu.process import QemuProcess
from bench.qemu.qmp import QmpClient
from bench.qemu.sriov_host import free_local_port

IMAGE_DIR = Path(__file__).resolve().parents[2] / IMAGE_DIR_DEFAULT
#: The issue's acceptance: a guest boots in under 30 s under TCG.
BOOT_LIMIT_S = 30.0
ADDRESS = "10.0.2.15/24"  # QEMU user-mode networking's guest address
MAC = "52:54:00:12:34:56"
ECHO_PORT = 7000
PRIMARY = {
    "driver": "vmxnet3",
    "netdev": "pr",
    "id": "primary0",
    "mac": MAC,
    "bus": "rp1",
    "failover_pair_id": "standby0",
    "romfile": "",
}
#: One line per failover slave of the configured netdev: name, phys_port_name, driver,
#: operstate ("-" where sysfs has nothing).
SLAVES_COMMAND = (
    f"m=$(cat {NETDEV_FILE}); for l in /sys/class/net/$m/lower_*; do [ -e $l ] || continue; "
    "d=/sys/class/net/${l##*/lower_}; r=$(readlink $d/device/driver); "
    'echo "${d##*/} $(cat $d/phys_port_name 2>/dev/null || echo -) ${r##*/} '
    '$(cat $d/operstate)"; done'
)


@dataclass
class Guest:
    """A booted guest: its QEMU, a QMP session and a console connection."""

    name: str
    work: Path
    process: QemuProcess
    qmp: QmpClient
    console: GuestConsole
    boot_seconds: float
    #: The host port forwarded to the guest's ``ECHO_PORT`` (0: none).
    echo_port: int = 0

    def sh(self, command: str, timeout: float = 10.0) -> str:
        return self.console.run(command, timeout=timeout, check=True).output

    def netdev(self) -> str:
        return self.sh(f"cat {NETDEV_FILE}").strip()

    def slaves(self) -> dict[str, tuple[str, str, str]]:
        """Failover slave name -> (phys_port_name, driver, operstate)."""
        rows = (line.split() for line in self.sh(SLAVES_COMMAND).splitlines())
        return {row[0]: (row[1], row[2], row[3]) for row in rows if len(row) == 4}

    def primary(self) -> str | None:
        """The enslaved primary's name (the slave that is not the ``sby`` standby)."""
        return next((n for n, s in self.slaves().items() if s[0] != "sby"), None)

    def counter(self, netdev: str, name: str) -> int:
        return int(self.sh(f"cat /sys/class/net/{netdev}/statistics/{name}"))

    def stop(self) -> None:
        self.console.close()
        self.qmp.close()  # QEMU serves one QMP client: the stop asks on its own
        self.process.stop()


def _boot(work: Path, name: str, devices: list[str]) -> Guest:
    if shutil.which(QEMU_BINARY) is None:
        pytest.skip(f"no {QEMU_BINARY}: run `make qemu`")
    if not (IMAGE_DIR / "initrd.img").is_file():
        pytest.skip(f"no failover guest image in {IMAGE_DIR}: run `make qemu-failover-image`")
    accel = usable_accelerator(IMAGE_DIR / "vmlinuz")
    argv = [
        "-machine", f"q35,accel={accel}", "-m", "256", "-nodefaults", "-display", "none",
        "-no-reboot", "-S",  # stopped until QMP listens: no event is missed
        "-kernel", str(IMAGE_DIR / "vmlinuz"), "-initrd", str(IMAGE_DIR / "initrd.img"),
        "-append", kernel_command_line(name, ADDRESS),
        *devices,
        *console_arguments(work, name),
        *kernel_log_arguments(work, name),
    ]  # fmt: skip
    process = QemuProcess(argv, work, name, die_with_controller=True)
    started = time.monotonic()
    process.start()
    try:
        qmp = process.qmp()
        qmp.execute("cont")
        wait_for_line(console_log(work, name), READY_LINE, started + 90, process.alive, name)
        boot_seconds = time.monotonic() - started
        console = GuestConsole.connect(console_socket(work, name), name)
    except BaseException:
        process.stop()
        raise
    print(f"\n{name}: booted to its ready line in {boot_seconds:.1f} s ({accel})")
    return Guest(name, work, process, qmp, console, boot_seconds)


def _wait_event(qmp: QmpClient, name: str, deadline: float, since: int) -> dict[str, Any] | None:
    """The first event ``name`` in ``qmp.events[since:]`` before ``deadline``, else None
    (a cheap command reads what QEMU sent meanwhile)."""
    while True:
        event = next((e for e in qmp.events[since:] if e.get("event") == name), None)
        if event is not None or time.monotonic() > deadline:
            return event
        qmp.execute("query-status")
        time.sleep(0.05)


def _until(what: str, check: Callable[[], bool], timeout: float = 15.0) -> float:
    """Seconds until ``check()`` holds (assertion error after ``timeout``)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"not within {timeout:g} s: {what}"
        time.sleep(0.2)
    return time.monotonic() - started


def _kernel_lines(guest: Guest) -> list[bytes]:
    return kernel_log_file(guest.work, guest.name).read_bytes().splitlines()


def _option(properties: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in properties.items())


@pytest.fixture(scope="class")
def plain_guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """A guest with a virtio NIC without ``failover=on`` and no primary (LM-10's guest);
    its port ``ECHO_PORT`` is forwarded from 127.0.0.1:``guest.echo_port``."""
    work = tmp_path_factory.mktemp("plain-guest")
    port = free_local_port()
    guest = _boot(
        work,
        "plain",
        [
            "-netdev", f"user,id=sb,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:{ECHO_PORT}",
            "-device", f"virtio-net-pci,netdev=sb,id=standby0,mac={MAC}",
        ],
    )  # fmt: skip
    guest.echo_port = port
    yield guest
    guest.stop()
    assert not guest.process.alive()


@pytest.fixture(scope="class")
def failover_guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """A guest with a virtio-net standby (``failover=on``) and a vmxnet3 primary."""
    work = tmp_path_factory.mktemp("failover-guest")
    guest = _boot(
        work,
        "fo",
        [
            "-device", "pcie-root-port,id=rp1,chassis=1",
            "-netdev", "user,id=sb,restrict=on",
            "-device", f"virtio-net-pci,netdev=sb,id=standby0,mac={MAC},failover=on",
            "-netdev", "user,id=pr,restrict=on",
            "-device", _option(PRIMARY),
        ],
    )  # fmt: skip
    yield guest
    guest.stop()
    assert not guest.process.alive()


class TestPlainGuest:
    def test_boots_with_the_address_on_its_virtio_nic(self, plain_guest: Guest) -> None:
        assert plain_guest.boot_seconds < BOOT_LIMIT_S
        netdev = plain_guest.netdev()
        assert (
            plain_guest.sh(f"readlink /sys/class/net/{netdev}/device/driver")
            .strip()
            .endswith("/virtio_net")
        )
        assert plain_guest.slaves() == {}
        assert f"inet {ADDRESS}" in plain_guest.sh(f"ip -o -4 addr show dev {netdev}")
        assert plain_guest.sh("hostname").strip() == "plain"
        assert _wait_event(plain_guest.qmp, "FAILOVER_NEGOTIATED", time.monotonic(), 0) is None

    def test_console_frames_each_answer(self, plain_guest: Guest) -> None:
        console = plain_guest.console
        answer = console.run("printf 'a\\nb'; echo ' to stderr' >&2; exit 3")
        assert (answer.exit_status, answer.output) == (3, "a\nb to stderr\n")
        text = "quotes ' \" $HOME `x` \\ and a long line " + "x" * 5000
        assert console.run(f"cat <<'EOF'\n{text}\nEOF").output == text + "\n"
        with pytest.raises(ConsoleError, match=r"plain: `exit 4` failed \(exit 4\)"):
            console.run("exit 4", check=True)

    def test_a_command_that_times_out_is_interrupted(self, plain_guest: Guest) -> None:
        with pytest.raises(ConsoleError, match=r"plain: `sleep 30`: no answer .* in 1 s"):
            plain_guest.console.run("sleep 30", timeout=1.0)
        started = time.monotonic()
        assert plain_guest.console.run("echo next", timeout=5.0).output == "next\n"
        assert time.monotonic() - started < 3.0  # ^C ended the sleep

    def test_the_console_socket_takes_one_connection_after_another(
        self, plain_guest: Guest
    ) -> None:
        plain_guest.console.close()
        try:
            for number in range(3):
                path = console_socket(plain_guest.work, plain_guest.name)
                with contextlib.closing(GuestConsole.connect(path, plain_guest.name)) as console:
                    assert console.run(f"echo {number}").output == f"{number}\n"
        finally:
            plain_guest.console = GuestConsole.connect(
                console_socket(plain_guest.work, plain_guest.name), plain_guest.name
            )
        assert READY_LINE in console_log(plain_guest.work, plain_guest.name).read_text()

    def test_busybox_nc_serves_a_tcp_echo(self, plain_guest: Guest) -> None:
        plain_guest.sh(tcp_echo_command(ECHO_PORT))
        _until("nc listens", lambda: f":{ECHO_PORT} " in plain_guest.sh("netstat -ltn"))
        payload = bytes(range(256)) * 400
        for _ in range(2):  # -ll: it keeps listening after a connection
            address = ("127.0.0.1", plain_guest.echo_port)
            with socket.create_connection(address, timeout=10) as conn:
                conn.sendall(payload)
                echoed = b""
                while len(echoed) < len(payload):
                    chunk = conn.recv(65536)
                    assert chunk, "the echo server closed the connection early"
                    echoed += chunk
            assert echoed == payload


class TestFailoverGuest:
    def test_boots_in_time(self, failover_guest: Guest) -> None:
        assert failover_guest.boot_seconds < BOOT_LIMIT_S

    def test_qemu_reports_failover_negotiated(self, failover_guest: Guest) -> None:
        event = _wait_event(failover_guest.qmp, "FAILOVER_NEGOTIATED", time.monotonic() + 10, 0)
        assert event is not None
        assert event["data"]["device-id"] == "standby0"

    def test_master_has_the_address_and_both_slaves(self, failover_guest: Guest) -> None:
        guest = failover_guest
        _until("the primary is enslaved", lambda: guest.primary() is not None)
        master = guest.netdev()
        slaves = guest.slaves()
        standby = [n for n, s in slaves.items() if s[:2] == ("sby", "virtio_net")]
        primary = [n for n, s in slaves.items() if s[1] == "vmxnet3"]
        assert len(slaves) == 2
        assert len(standby) == 1
        assert len(primary) == 1
        print(f"\nmaster {master}, standby {standby[0]}, primary {primary[0]}")
        assert f"inet {ADDRESS}" in guest.sh(f"ip -o -4 addr show dev {master}")
        assert guest.sh(f"cat /sys/class/net/{master}/address").strip() == MAC
        assert guest.sh(f"[ -e /sys/class/net/{master}/master ] || echo none").strip() == "none"
        _until("the primary is up", lambda: guest.slaves()[primary[0]][2] == "up")

    def test_traffic_goes_through_the_primary(self, failover_guest: Guest) -> None:
        guest = failover_guest
        primary = guest.primary()
        standby = next(n for n, s in guest.slaves().items() if s[0] == "sby")
        assert primary is not None
        before = {n: guest.counter(n, "tx_packets") for n in (primary, standby)}
        guest.sh("ping -c 3 -W 2 10.0.2.2")  # user-mode networking's gateway answers
        assert guest.counter(primary, "tx_packets") >= before[primary] + 3
        assert guest.counter(standby, "tx_packets") == before[standby]

    def test_primary_unplug_and_replug(self, failover_guest: Guest) -> None:
        guest = failover_guest
        _until("the primary is enslaved", lambda: guest.primary() is not None)
        since = len(guest.qmp.events)
        guest.qmp.execute("device_del", id="primary0")
        assert _wait_event(guest.qmp, "DEVICE_DELETED", time.monotonic() + 15, since)
        _until("the primary is gone", lambda: guest.primary() is None)
        assert [s[:2] for s in guest.slaves().values()] == [("sby", "virtio_net")]
        assert f"inet {ADDRESS}" in guest.sh(f"ip -o -4 addr show dev {guest.netdev()}")
        guest.qmp.execute("device_add", **PRIMARY)
        took = _until("the primary is back and up", lambda: _primary_state(guest) == "up")
        print(f"\nre-plugged primary {guest.primary()} enslaved and up after {took:.1f} s")
        assert f"inet {ADDRESS}" in guest.sh(f"ip -o -4 addr show dev {guest.netdev()}")
        # the guest kernel told its own serial port the moment net_failover changed
        told = [primary_event(line) for line in _kernel_lines(guest)]
        names = [event[0] for event in told if event is not None]
        assert names[-2:] == ["primary-unregistered", "primary-registered"], names

    def test_never_eject_lever_leaves_the_unplug_pending(self, failover_guest: Guest) -> None:
        guest = failover_guest
        _until("the primary is enslaved", lambda: guest.primary() is not None)
        since = len(guest.qmp.events)
        guest.sh(NEVER_EJECT_COMMAND)
        try:
            guest.qmp.execute("device_del", id="primary0")
            assert _wait_event(guest.qmp, "DEVICE_DELETED", time.monotonic() + 4, since) is None
            assert guest.primary() is not None
        finally:
            guest.sh(EJECT_AGAIN_COMMAND)
        # the pending request is handled as soon as the GPE is unmasked
        assert _wait_event(guest.qmp, "DEVICE_DELETED", time.monotonic() + 10, since)
        _until("the primary is gone", lambda: guest.primary() is None)
        guest.qmp.execute("device_add", **PRIMARY)
        _until("the primary is back and up", lambda: _primary_state(guest) == "up")

    def test_never_eject_holds_a_migration_in_wait_unplug(self, failover_guest: Guest) -> None:
        guest = failover_guest
        _until("the primary is back and up", lambda: _primary_state(guest) == "up")

        def status() -> str:
            state: str = guest.qmp.execute("query-migrate").get("status", "none")
            return state

        guest.sh(NEVER_EJECT_COMMAND)
        try:
            guest.qmp.execute("migrate", uri="exec:cat > /dev/null")
            _until("wait-unplug", lambda: status() == "wait-unplug", timeout=10)
            time.sleep(3)
            assert status() == "wait-unplug"
            guest.qmp.execute("migrate_cancel")
            # QEMU waits (up to 30 s) for the unplug it asked for before it re-plugs
            assert status() == "cancelling"
        finally:
            guest.sh(EJECT_AGAIN_COMMAND)
        _until("cancelled", lambda: status() == "cancelled", timeout=10)
        _until("the primary is back and up", lambda: _primary_state(guest) == "up")
        assert guest.qmp.execute("query-status")["status"] == "running"


def _primary_state(guest: Guest) -> str:
    primary = guest.primary()
    return guest.slaves()[primary][2] if primary else "absent"
