"""One guest's vmxnet3 device process (``python -m nic_emulators.vmxnet3 --config FILE``).

Runs in the network namespace of the guest's host. Serves ``vmx.sock`` in the
guest's run directory: the guest's shell connects there (``hello``, step
answers), and so do the bench and the CLI (``status``, ``switch``,
``suspend``, ``resume``, ``set``, ``migrate``, ``cancel-migration``,
``events``). Listens to the NIC's events (a VF fault, removal, power) and
reacts as the hypervisor would.

A migration destination (``incoming`` in its config) is a second device
process for the same guest, on another host: its files carry its
``instance`` tag until the guest's shell moves to it, when it takes over
``vmx.sock`` (see ``migration.py``). Every process keeps a timestamped event
log (``events``) that travels with the guest from host to host.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import sys
import time
from pathlib import Path
from typing import Any

from nic_emulators.config import VmxConfig, shm_name
from nic_emulators.control import (
    DEFERRED,
    Connection,
    ControlClient,
    ControlError,
    ControlServer,
    Deferred,
    read_lines,
)
from nic_emulators.frames import rarp
from nic_emulators.notify import Fifo
from nic_emulators.ports import WirePort
from nic_emulators.shm import SharedRegion
from nic_emulators.vmxnet3 import layout as v
from nic_emulators.vmxnet3.backend import EmulationBackend, EmulationFault, PfVport
from nic_emulators.vmxnet3.device import DeviceModel
from nic_emulators.vmxnet3.nic_requests import NicRequests
from nic_emulators.vmxnet3.relocation import GuestRelocation

IDLE_WAKE_S = 0.01
MULTICAST_LIMIT = 32
LINK_DOWN = "VF link down"  # entries a VF's (and a vport's) multicast filter holds
FEATURES = ("csum", "vlan", "tso", "rss", "lro")


class VmxProcess:
    def __init__(self, config: VmxConfig) -> None:
        self.config = config
        self.run_dir = Path(config.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        tag = f"-{config.instance}" if config.instance else ""
        region = SharedRegion.create(
            shm_name(config.lab, config.guest, *(["vmx", config.instance] if tag else ["vmx"])),
            v.REGION_BYTES,
        )
        self.backend = EmulationBackend(
            region,
            Fifo(self.run_dir / f"vmx{tag}.db", create=True),
            Fifo(self.run_dir / f"vmx{tag}.irq", create=True),
        )
        #: Timestamped events (epoch seconds), the guest's history since it started.
        self.events: list[dict[str, Any]] = []
        #: The guest is stopped (stop-and-copy) or gone (handed over): no frame moves.
        self.stopped = False
        self.selector.register(
            self.backend.doorbell, selectors.EVENT_READ, self.backend.doorbell.drain
        )
        self.shell: Connection | None = None
        self.device = DeviceModel(config, self._tell_shell)
        self.device.on_event = lambda name, details: self.record(name, **details)
        self.nic_events: socket.socket | None = None
        self.nic_inbuf = b""
        self.deferred_events: list[dict[str, Any]] = []
        self.filters: dict[str, Any] = {"multicast": [], "promisc": False, "allmulti": False}
        self.announced = "emulation"
        self.nic_requests: NicRequests | None = None
        if config.nic_control:
            self.device.nic = ControlClient(config.nic_control)
            self.nic_requests = NicRequests(config.nic_control, self.selector, self._nic_reply)
            self.device.ask_nic = self.nic_requests.ask
            self._subscribe_nic()
        policy = {
            "mac_change": config.policy.mac_change,
            "vlans": [list(r) for r in config.policy.vlans],
            "antispoof": config.policy.antispoof,
            "mtu_max": config.policy.mtu_max,
        }
        if not config.nic_pf_port:
            self.device.init_args = {
                "config": {"mac": config.mac, "mtu": config.mtu},
                "policy": policy,
            }
        if config.nic_pf_port:
            port = PfVport(self.run_dir / f"vport{tag}.sock", config.nic_pf_port)
            self.backend.port = port
            assert self.device.nic is not None
            self.device.nic.call(
                "VPORT_ADD",
                guest=config.guest,
                mac=config.mac,
                socket=str(port.own),
                mtu=config.mtu,
                policy=policy,
            )
        elif config.uplink:
            self.backend.port = WirePort(config.uplink)
            self.backend.mac = bytes.fromhex(config.mac.replace(":", ""))
        if self.backend.port is not None:
            self.selector.register(self.backend.port, selectors.EVENT_READ, self.backend.from_port)
        self.control = ControlServer(self.selector, self.run_dir / f"vmx{tag}.sock", self._handle)
        self.relocation = GuestRelocation(self)

    # -- the event log --------------------------------------------------------

    def record(self, name: str, **details: Any) -> None:
        """An event of the guest's device: kept for ``events``, and logged."""
        event = {"t": time.time(), "host": self.config.host, "event": name, **details}
        self.events.append(event)
        shown = " ".join(f"{k}={v}" for k, v in details.items())
        print(f"{time.strftime('%H:%M:%S')} {self.config.guest}: {name} {shown}", flush=True)

    # -- the NIC's events -----------------------------------------------------

    def _subscribe_nic(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.config.nic_control)
        sock.sendall(b'{"id": 1, "op": "subscribe"}\n')
        sock.setblocking(False)
        self.nic_events = sock
        self.selector.register(sock, selectors.EVENT_READ, self._nic_event_ready)

    def _nic_event_ready(self) -> None:
        assert self.nic_events is not None
        got = read_lines(self.nic_events, self.nic_inbuf)
        if got is None:
            self.selector.unregister(self.nic_events)
            self.nic_events.close()
            self.nic_events = None
            return
        lines, self.nic_inbuf = got
        for line in lines:
            message = json.loads(line)
            if "event" in message:
                self.deferred_events.append(message)
        self.react()

    def react(self) -> None:
        """Handle NIC events that concern this guest, one at a time between sequences."""
        device = self.device
        if self.relocation.gone:
            self.deferred_events.clear()  # the guest is not here any more
            return
        while self.deferred_events and device.sequence is None:
            event = self.deferred_events.pop(0)
            name, owner = event["event"], event.get("owner")
            if name == "runtime-error":
                if device.mode == "passthrough" and device.vf is not None:
                    # The guest stopped calling its plugin: finish what it posted, then drop.
                    drained, left = False, 0
                    with contextlib.suppress(ControlError):
                        left = int(device.nic_op("VF_QUIESCE", vf=device.vf).get("left", 0))
                        drained = True
                    reason = f"runtime error: {event.get('reason')}"
                    device.start(
                        "fallback", device.vf_lost(reason, release=True, drained=drained, left=left)
                    )
                continue
            if name == "vf-error" and owner == self.config.guest and device.vf == event.get("vf"):
                reason = f"runtime error: VF {event['vf']} quarantined ({event.get('code')})"
                device.start("fallback", device.vf_lost(reason, release=True))
            elif (
                name == "vf-removed" and owner == self.config.guest and device.vf == event.get("vf")
            ):
                device.start(
                    "fallback", device.vf_lost(f"VF removed: {event.get('reason')}", release=False)
                )
            elif name in ("vf-added", "power") and event.get("on", True) and self._wants_vf_back():
                device.start("return", device.to_passthrough(), self._after_return)
            elif name == "link" and not event.get("up") and device.mode == "passthrough":
                # A VF without link is a black hole: carry the guest over emulation.
                device.start("fallback", device.to_emulation(LINK_DOWN))
            elif name == "link" and event.get("up") and device.reason == LINK_DOWN:
                device.start("return", device.to_passthrough(), self._after_return)

    def _wants_vf_back(self) -> bool:
        reason = self.device.reason
        return self.device.mode == "emulation" and reason.startswith(("VF removed", "no VF"))

    def _after_return(self, result: dict[str, Any] | None, error: str | None) -> None:
        del result, error  # the history records it

    def _nic_reply(self, seq: int, reply: dict[str, Any]) -> None:
        self.device.shell_answer(seq, reply)
        self.react()

    # -- the shell ------------------------------------------------------------

    def _tell_shell(self, event: str, details: dict[str, Any]) -> None:
        if self.shell is None or self.shell.closed:
            self.device.shell_answer(
                int(details["seq"]), {"ok": False, "reason": "no guest driver"}
            )
            return
        if event == "detach":  # what the vport holds (the NIC's fence too) reaches the rings first
            for _ in range(64):
                self.backend.from_port()
        self.shell.send({"event": event, **details})

    def _hello(self, conn: Connection, args: dict[str, Any]) -> dict[str, Any]:
        """The guest's driver attaches (at start, or after its device moved here)."""
        device = self.device
        resume = bool(args.get("resume"))
        if resume:
            self.relocation.check_resumable()
        self.shell = conn
        device.memory_name = str(args["memory"])
        if self.backend.memory is None:
            self.backend.attach_memory(device.memory_name)
        device.reason = device.inactive_reason() or "waiting for the guest driver"
        if resume:
            self.relocation.resumed()
        return {
            "region": self.backend.region.name,
            "doorbell": str(self.backend.doorbell.path),
            "interrupt": str(self.backend.interrupt.path),
            "ring_size": v.RING_SIZE,
        }

    def _handle(
        self, conn: Connection, request_id: int, op: str, args: dict[str, Any]
    ) -> dict[str, Any] | Deferred:
        device = self.device
        if op == "hello":
            return self._hello(conn, args)
        if op == "ready":
            # the shell serves its loop now: offer it a VF, as a hypervisor does at driver load
            if (
                device.mode == "emulation"
                and device.inactive_reason() is None
                and device.sequence is None
            ):
                device.start("initial switch", device.to_passthrough())
            return {}
        if op == "reload":

            def again(result: dict[str, Any] | None, error: str | None) -> None:
                del result, error
                device.start("reload: back to passthrough", device.to_passthrough())

            device.start("reload: to emulation", device.to_emulation("guest driver reload"), again)
            return {}
        if op == "answer":
            device.shell_answer(int(args["seq"]), args)
            self.react()
            return {}
        if op == "runtime-error":
            self.deferred_events.append({"event": "runtime-error", "reason": args.get("reason")})
            self.react()
            return {}
        if op == "status":
            return {
                **device.status(),
                "emulation": {**self.backend.counters, "tx_fences": self.backend.fences},
                **self.relocation.status(),
            }
        if op in GuestRelocation.OPS:
            return self.relocation.handle(conn, request_id, op, args)
        if op == "switch":
            target = args.get("to")
            if target == "passthrough":
                sequence = device.to_passthrough()
            elif target == "emulation":
                sequence = device.to_emulation(str(args.get("reason") or "requested"))
            else:
                raise ControlError(f"switch to {target!r}? (emulation or passthrough)", "EINVAL")
            device.start(
                f"switch to {target}", sequence, lambda r, e: self._answer(conn, request_id, r, e)
            )
            return DEFERRED
        if op == "suspend":
            device.suspended = True
            device.start(
                "suspend",
                device.to_emulation("guest suspended"),
                lambda r, e: self._answer(conn, request_id, r, e),
            )
            return DEFERRED
        if op == "resume":
            device.suspended = False
            device.start(
                "resume",
                device.to_passthrough(),
                lambda r, e: self._answer(conn, request_id, r, e, tolerate=True),
            )
            return DEFERRED
        if op == "filter":
            return self._filter(args)
        if op == "set":
            if "memory_reserved" in args:
                device.memory_reserved = bool(args["memory_reserved"])
            if "required_features" in args:
                unknown = set(args["required_features"]) - set(FEATURES)
                if unknown:
                    raise ControlError(
                        f"unknown features {sorted(unknown)}; known: {', '.join(FEATURES)}",
                        "EINVAL",
                    )
                device.required_features = frozenset(args["required_features"])
            if "fail_after_activate" in args:
                device.fail_after_activate = bool(args["fail_after_activate"])
            return device.status()
        raise ControlError(f"unknown operation {op!r}", "EINVAL")

    def _filter(self, args: dict[str, Any]) -> dict[str, Any]:
        """The guest driver's receive filters and port settings, applied to the guest's vport
        and, in passthrough, to its VF as well — so they hold in both modes and across switches.
        More than 32 multicast groups do not fit a VF's filter: both ports go allmulti."""
        nic = self.device.nic
        if nic is None:
            raise ControlError("no SR-IOV NIC on this host: filters are the vSwitch's", "ENODEV")
        wanted = self.filters
        setting = str(args.get("set"))
        calls: list[tuple[str, dict[str, Any]]]
        if setting == "multicast":
            wanted["multicast"] = [str(m) for m in args.get("macs", [])]
            overflow = len(wanted["multicast"]) > MULTICAST_LIMIT
            calls = [
                ("SET_MULTICAST", {"macs": [] if overflow else wanted["multicast"]}),
                self._rx_mode(overflow),
            ]
        elif setting == "rx_mode":
            wanted["promisc"], wanted["allmulti"] = (
                bool(args.get("promisc")),
                bool(args.get("allmulti")),
            )
            calls = [self._rx_mode(len(wanted["multicast"]) > MULTICAST_LIMIT)]
        elif setting == "mac":
            calls = [("SET_MAC", {"mac": args["mac"]})]
        elif setting in ("add_vlans", "del_vlans"):
            op = "ADD_VLAN_RANGE" if setting == "add_vlans" else "DEL_VLAN_RANGE"
            calls = [(op, {"lo": int(args["lo"]), "hi": int(args.get("hi", args["lo"]))})]
        elif setting == "default_vlan":
            calls = [("SET_DEFAULT_VLAN", {"vlan": args.get("vlan")})]
        elif setting == "mtu":
            calls = [("SET_MTU", {"mtu": int(args["mtu"])})]
        elif setting == "antispoof":
            calls = [("SET_ANTISPOOF", {"on": bool(args["on"])})]
        else:
            raise ControlError(
                f"unknown filter setting {setting!r} (multicast, rx_mode, mac, add_vlans, "
                "del_vlans, "
                "default_vlan, mtu, antispoof)",
                "EINVAL",
            )
        ports = [f"vport:{self.config.guest}"]
        if self.device.vf is not None:
            ports.append(f"vf{self.device.vf}")
        applied: dict[str, Any] = {}
        for port in ports:
            for op, params in calls:
                applied[port] = nic.call(op, port=port, **params)
        return {"ports": applied, "wanted": dict(wanted)}

    def _rx_mode(self, overflow: bool) -> tuple[str, dict[str, Any]]:
        wanted = self.filters
        return (
            "SET_RX_MODE",
            {"promisc": wanted["promisc"], "allmulti": wanted["allmulti"] or overflow},
        )

    def _announce(self) -> None:
        """Entering emulation through a vSwitch uplink of its own, the guest's MAC moves to
        another switch port: tell the lab switch with a RARP from the guest's MAC, as a
        hypervisor's "notify switches" (and QEMU's announce) do."""
        self.announced = self.device.mode
        if self.device.mode == "emulation" and isinstance(self.backend.port, WirePort):
            self.backend.port.send(rarp(self.config.mac))

    def _answer(
        self,
        conn: Connection,
        request_id: int,
        result: dict[str, Any] | None,
        error: str | None,
        tolerate: bool = False,
    ) -> None:
        if error and not tolerate:
            conn.answer(request_id, error=ControlError(error, "EIO"))
        else:
            conn.answer(request_id, result)
        self.react()

    # -- loop -----------------------------------------------------------------

    def run(self) -> None:
        print("READY", flush=True)
        backend, select = self.backend, self.selector.select
        while not self.stopping:
            try:
                sent = 0 if self.stopped else backend.poll_tx()
            except EmulationFault as fault:
                print(
                    f"guest {self.config.guest}: emulation stopped: {fault}",
                    file=sys.stderr,
                    flush=True,
                )
                backend.memory = None
                sent = 0
            backend.raise_interrupt()
            self.device.check_timeouts()
            if self.device.mode != self.announced:
                self._announce()
            busy = sent or (not self.stopped and backend.arm())
            registered = self.selector.get_map()
            for key, _ in select(0.0 if busy else IDLE_WAKE_S):
                if registered.get(key.fd) is key:  # not unregistered by an earlier callback
                    key.data()
            backend.raise_interrupt()

    def close(self) -> None:
        self.relocation.close()
        with contextlib.suppress(Exception):
            if self.device.nic is not None and not self.relocation.gone:
                if self.device.vf is not None:
                    with contextlib.suppress(ControlError):
                        self.device.nic.call("VF_QUIESCE", vf=self.device.vf)
                    with contextlib.suppress(ControlError):
                        self.device.nic.call("VF_RELEASE", vf=self.device.vf)
                with contextlib.suppress(ControlError):
                    self.device.nic.call("VPORT_DEL", guest=self.config.guest)
        if self.nic_requests is not None:
            self.nic_requests.close()
        if self.device.nic is not None:
            self.device.nic.close()
        self.control.close()
        self.backend.close()
        self.backend.doorbell.close()
        self.backend.interrupt.close()
        self.backend.region.close()
