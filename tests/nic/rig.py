"""A data-path rig without SSH: one host with an emulated NIC, a generator, guests.

Real parts throughout: namespaces ``npt<hex>-<role>``, a veth between the host
(the NIC's uplink) and the generator, a persistent TAP per guest in its own
namespace, and the three real processes (NIC emulator, vmxnet3 device, shell)
started exactly as the lab starts them. For the data path's own tests; the
conformance suite runs the same processes through ``npabench up``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nic_emulators.config import (
    NicConfig,
    ShellConfig,
    VmxConfig,
    guest_run_dir,
    lab_shm_files,
    nic_run_dir,
    write_config,
)
from nic_emulators.control import ControlClient
from tests.traffic.netns import Namespaces, Process, ip

GEN_MAC = "02:4e:50:00:00:02"
GEN_IP = "198.19.77.2"
HOST_MAC = "02:4e:50:00:00:11"


def guest_mac(n: int) -> str:
    return f"02:4e:50:00:01:{n:02x}"


def guest_ip(n: int) -> str:
    return f"198.19.77.{100 + n}"


@dataclass
class Rig:
    model: str = "alpha-10g"
    vfs: int = 2
    guests: int = 1
    mode: str = "npa"
    #: False: namespaces, veth and TAPs only (for the raw-forwarder reference).
    datapath: bool = True
    net: Namespaces = field(init=False)
    state: Path = field(init=False)
    procs: dict[str, Process] = field(default_factory=dict)

    def __post_init__(self) -> None:
        roles = ("h", "t", *(f"g{n}" for n in range(1, self.guests + 1)))
        self.net = Namespaces(roles)
        self.lab = self.net.tag
        self.state = Path(tempfile.mkdtemp(prefix=f"{self.lab}-"))

    # -- building ------------------------------------------------------------------------------

    def up(self) -> Rig:
        net = self.net
        net.create()
        net.veth(("h", "up0", HOST_MAC), ("t", "eth0", GEN_MAC))
        ip("-n", net.ns("t"), "addr", "add", f"{GEN_IP}/24", "dev", "eth0")
        nic_dir = nic_run_dir(self.state, "h", "nic0")
        if not self.datapath:
            for n in range(1, self.guests + 1):
                self.make_tap(n)
            return self
        config = NicConfig(
            lab=self.lab,
            host="h",
            name="nic0",
            model=self.model,
            vfs=self.vfs,
            uplink="up0",
            run_dir=str(nic_dir),
        )
        self.start("nic", "h", "nic_emulators.nic", write_config(config, nic_dir / "nic.json"))
        for n in range(1, self.guests + 1):
            self.add_guest(n, nic_dir)
        return self

    def make_tap(self, n: int) -> None:
        ns = self.net.ns(f"g{n}")
        ip("-n", ns, "tuntap", "add", "dev", "eth0", "mode", "tap")
        ip("-n", ns, "link", "set", "eth0", "address", guest_mac(n), "up")
        ip("-n", ns, "addr", "add", f"{guest_ip(n)}/24", "dev", "eth0")

    def raw_forwarder(self, n: int = 1) -> None:
        """The reference: one Python loop between guest ``n``'s TAP and the uplink."""
        proc = self.net.spawn(
            "h",
            "raw forwarder",
            sys.executable,
            "-m",
            "tests.benchmarks.raw_forwarder",
            "--guest-ns",
            self.ns(f"g{n}"),
            "--tap",
            "eth0",
            "--host-ns",
            self.ns("h"),
            "--uplink",
            "up0",
            "--mac",
            guest_mac(n),
        )
        proc.wait_ready()
        self.procs["raw forwarder"] = proc

    def add_guest(self, n: int, nic_dir: Path) -> None:
        name, role = f"vm{n}", f"g{n}"
        self.make_tap(n)
        run_dir = guest_run_dir(self.state, name)
        vmx = VmxConfig(
            lab=self.lab,
            guest=name,
            host="h",
            mac=guest_mac(n),
            run_dir=str(run_dir),
            nic_control=str(nic_dir / "ctl.sock"),
            nic_pf_port=str(nic_dir / "pf.sock"),
            mode=self.mode,
        )
        self.start(
            f"vmx {name}", "h", "nic_emulators.vmxnet3", write_config(vmx, run_dir / "vmx.json")
        )
        shell = ShellConfig(lab=self.lab, guest=name, tap="eth0", run_dir=str(run_dir))
        self.start(
            f"shell {name}", role, "drivers.shell", write_config(shell, run_dir / "shell.json")
        )

    def start(self, what: str, role: str, module: str, config: Path) -> None:
        proc = self.net.spawn(role, what, sys.executable, "-m", module, "--config", str(config))
        proc.wait_ready()
        self.procs[what] = proc

    def close(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop_quietly() if hasattr(proc, "stop_quietly") else proc.kill()
        self.net.close()
        shutil.rmtree(self.state, ignore_errors=True)
        for leftover in lab_shm_files(self.lab):
            leftover.unlink(missing_ok=True)

    def __enter__(self) -> Rig:
        try:
            return self.up()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reaching the parts ---------------------------------------------------------------------

    def nic(self) -> ControlClient:
        return ControlClient(nic_run_dir(self.state, "h", "nic0") / "ctl.sock")

    def vmx(self, n: int = 1) -> ControlClient:
        return ControlClient(guest_run_dir(self.state, f"vm{n}") / "vmx.sock")

    def shell(self, n: int = 1) -> ControlClient:
        return ControlClient(guest_run_dir(self.state, f"vm{n}") / "shell.sock")

    def status(self, n: int = 1) -> dict[str, Any]:
        with self.vmx(n) as vmx:
            return vmx.call("status")

    def wait_mode(self, mode: str, n: int = 1, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status(n)
            if status["mode"] == mode and not status.get("busy"):
                return status
            time.sleep(0.02)
        raise AssertionError(f"vm{n} not in {mode} within {timeout} s: {status}")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the rig's data path processes have used so far."""
        return sum(self.cpu_by_process().values())

    def cpu_by_process(self) -> dict[str, float]:
        """CPU time (user + system) each of the rig's processes has used so far, by its
        role ("nic", "vmx vm1", "shell vm1", "raw forwarder")."""
        used: dict[str, float] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for what, proc in self.procs.items():
            try:
                fields = Path(f"/proc/{proc.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[what] = (int(fields[11]) + int(fields[12])) / tick
        return used

    def ns(self, role: str) -> str:
        return self.net.ns(role)


@contextlib.contextmanager
def rig(**kwargs: Any) -> Any:
    with Rig(**kwargs) as made:
        yield made


def one_way(  # noqa: PLR0917 -- mirrors the agent's options
    rig: Rig,
    source: str,
    sink: str,
    seconds: float = 2.0,
    pps: int | None = None,
    size: int = 128,
    flow: int = 1,
    start_at: float | None = None,
    batch: int | None = None,
    gaps_over_ms: float | None = None,
    after_send: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Stamped UDP from role ``source`` to role ``sink`` ("t" or "g<n>"); the checker's JSON.
    ``start_at``: the wall-clock second the sender starts (default: once it is ready);
    ``batch``: frames per send (default: the agent's, at most 1 ms of frames);
    ``gaps_over_ms``: the checker lists every gap longer than that (``gaps``);
    ``after_send``: called once the sender is done, before the checker is waited for."""
    from bench.traffic.packets import PacketSpec, build_template

    def addr(role: str) -> tuple[str, str]:
        return (
            (GEN_MAC, GEN_IP)
            if role == "t"
            else (guest_mac(int(role[1:])), guest_ip(int(role[1:])))
        )

    (src_mac, src_ip), (dst_mac, dst_ip) = addr(source), addr(sink)
    template = build_template(
        PacketSpec(
            src_mac=src_mac,
            dst_mac=dst_mac,
            src_ip=src_ip,
            dst_ip=dst_ip,
            frame_size=size,
            flow=flow,
        )
    )
    checker = rig.net.agent(
        sink, "recv", "--iface", "eth0", "--flow", str(flow), "--idle-exit", "1.0",
        "--udp-sink", str(template.spec.dport),
        *(["--gaps-over", str(gaps_over_ms)] if gaps_over_ms is not None else []),
    )  # fmt: skip
    checker.wait_ready()
    rate = (
        ["--pps", str(pps), "--count", str(int(pps * seconds))]
        if pps
        else ["--max-rate", "--duration", str(seconds)]
    )
    sender = rig.net.agent(
        source,
        "send",
        "--iface",
        "eth0",
        "--frame-hex",
        template.frame.hex(),
        "--payload-at",
        str(template.payload_at),
        "--flow",
        str(flow),
        *rate,
        *(["--start-at", f"{start_at:.6f}"] if start_at is not None else []),
        *(["--batch", str(batch)] if batch is not None else []),
    )
    sender.wait_ready()
    sent = sender.result(timeout=seconds + 30)
    if after_send is not None:
        after_send()
    got = checker.result(timeout=seconds + 30)
    got["sender"] = sent
    return got
