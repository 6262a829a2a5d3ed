"""The NIC's control operations: the PF side of the VF operations, and the lab's levers.

VF operations (ARCHITECTURE.md): VF_ACQUIRE, VF_GET_INFO, VF_INIT, VF_ACTIVATE,
VF_QUIESCE, VF_SAVE_STATE, VF_RELEASE, GET_QUEUE_STATS, GET_QUEUE_STATUS and
the port settings SET_MAC, SET_MULTICAST (at most 32), SET_RX_MODE,
ADD_VLAN_RANGE, DEL_VLAN_RANGE, SET_DEFAULT_VLAN, SET_ANTISPOOF, SET_MTU,
SET_RSS_IND_TABLE — each refused (EPERM, EINVAL, ENOSPC...) when the port
policy forbids it. Port settings name a ``port``: ``vf<N>`` or ``vport:<guest>``.

Lab levers: VPORT_ADD / VPORT_DEL (a guest's emulated port behind the PF),
LINK, POWER, VF_REMOVE (surprise removal) / VF_RESTORE, INJECT (make the next
named operation fail), VECTORS (shrink the interrupt vector pool), STATUS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nic_emulators.config import PortPolicy
from nic_emulators.control import Connection, ControlError, Deferred
from nic_emulators.port_config import PolicyError, PortConfig
from nic_emulators.vendors import window as w

if TYPE_CHECKING:
    from nic_emulators.nic import Nic
    from nic_emulators.vf import VirtualFunction

Args = dict[str, Any]


def mac_bytes(text: str) -> bytes:
    try:
        value = bytes.fromhex(text.replace(":", ""))
    except ValueError:
        value = b""
    if len(value) != 6:
        raise ControlError(f"{text!r} is not a MAC address", "EINVAL")
    return value


def mac_text(value: bytes) -> str:
    return ":".join(f"{b:02x}" for b in value)


def policy_from(args: Args) -> PortPolicy:
    data = dict(args.get("policy") or {})
    if "vlans" in data:
        data["vlans"] = tuple((int(lo), int(hi)) for lo, hi in data["vlans"])
    return PortPolicy(**data)


def config_to_json(config: PortConfig) -> Args:
    return {
        "mac": mac_text(config.mac),
        "multicast": sorted(mac_text(m) for m in config.multicast),
        "promisc": config.promisc,
        "allmulti": config.allmulti,
        "broadcast": config.broadcast,
        "vlans": sorted(config.vlans),
        "default_vlan": config.default_vlan,
        "antispoof": config.antispoof,
        "mtu": config.mtu,
    }


def config_from_json(data: Args) -> PortConfig:
    return PortConfig(
        mac=mac_bytes(data["mac"]),
        multicast=frozenset(mac_bytes(m) for m in data.get("multicast", ())),
        promisc=bool(data.get("promisc", False)),
        allmulti=bool(data.get("allmulti", False)),
        broadcast=bool(data.get("broadcast", True)),
        vlans=frozenset(int(v) for v in data.get("vlans", ())),
        default_vlan=data.get("default_vlan"),
        antispoof=bool(data.get("antispoof", True)),
        mtu=int(data.get("mtu", 1500)),
        enabled=False,
    )


class NicOperations:
    def __init__(self, nic: Nic) -> None:
        self.nic = nic
        self.policies: dict[str, PortPolicy] = {}
        self.table: dict[str, Callable[[Args], Args]] = {
            "VF_ACQUIRE": self.acquire,
            "VF_GET_INFO": lambda a: self.vf(a, "VF_GET_INFO").info(),
            "VF_INIT": self.init,
            "VF_ACTIVATE": self.activate,
            "VF_QUIESCE": self.quiesce,
            "VF_SAVE_STATE": self.save_state,
            "VF_RELEASE": self.release,
            "GET_QUEUE_STATS": lambda a: {"queues": self.vf(a, "GET_QUEUE_STATS").read_deltas()},
            "GET_QUEUE_STATUS": self.queue_status,
            "SET_MAC": lambda a: self.port_op(a, "set_mac", mac_bytes(a["mac"])),
            "SET_MULTICAST": lambda a: self.port_op(
                a, "set_multicast", [mac_bytes(m) for m in a["macs"]]
            ),
            "SET_RX_MODE": lambda a: self.port_op(
                a,
                "set_rx_mode",
                bool(a.get("promisc")),
                bool(a.get("allmulti")),
                bool(a.get("broadcast", True)),
            ),
            "ADD_VLAN_RANGE": lambda a: self.port_op(
                a, "add_vlan_range", int(a["lo"]), int(a["hi"])
            ),
            "DEL_VLAN_RANGE": lambda a: self.port_op(
                a, "del_vlan_range", int(a["lo"]), int(a["hi"])
            ),
            "SET_DEFAULT_VLAN": lambda a: self.port_op(a, "set_default_vlan", a.get("vlan")),
            "SET_ANTISPOOF": lambda a: self.port_op(a, "set_antispoof", bool(a["on"])),
            "SET_MTU": lambda a: self.port_op(a, "set_mtu", int(a["mtu"])),
            "SET_RSS_IND_TABLE": lambda a: {"table": list(a.get("table", []))},
            "PORT_CONFIG": lambda a: config_to_json(self.eswitch_call("config", self.port_name(a))),
            "PORT_SET_CONFIG": self.port_set_config,
            "PORT_COUNTERS": lambda a: self.nic.eswitch.counters(self.port_name(a)),
            "VPORT_ADD": self.vport_add,
            "VPORT_DEL": self.vport_del,
            "LINK": lambda a: self.lever(lambda: self.nic.set_link(bool(a["up"]))),
            "POWER": lambda a: self.lever(
                lambda: self.nic.power_on() if a["on"] else self.nic.power_off()
            ),
            "VF_REMOVE": self.remove,
            "VF_RESTORE": self.restore,
            "INJECT": self.inject,
            "PAUSE": self.pause,
            "SET_VF_FEATURES": self.set_vf_features,
            "VECTORS": self.vectors,
            "STATUS": lambda a: self.nic.status(),
        }

    def handle(self, conn: Connection, request_id: int, op: str, args: Args) -> Args | Deferred:
        action = self.table.get(op)
        if action is None:
            raise ControlError(
                f"unknown operation {op!r} (known: {', '.join(self.table)})", "EINVAL"
            )
        self.nic.flush()  # frames already switched go where the ports were before this op
        if op in self.nic.injected:
            message = self.nic.injected.pop(op)
            raise ControlError(f"{op}: {message} (injected failure)", "EIO")
        if op.startswith(("VF_", "GET_", "SET_", "ADD_", "DEL_")) and not self.nic.powered:
            raise ControlError(f"{op}: NIC {self.nic.name} is powered off", "ENODEV")
        try:
            return action(args)
        except PolicyError as err:
            raise ControlError(f"{op}: {err}", err.code) from err
        except KeyError as err:
            raise ControlError(f"{op}: missing argument {err}", "EINVAL") from err

    # -- helpers --------------------------------------------------------------

    def vf(self, args: Args, op: str) -> VirtualFunction:
        try:
            index = int(args["vf"])
            vf = self.nic.vfs[index]
        except (KeyError, ValueError, TypeError, IndexError):
            raise ControlError(
                f"{op}: no VF {args.get('vf')!r} on {self.nic.name} (it has {len(self.nic.vfs)})",
                "ENODEV",
            ) from None
        if vf.state == "absent":
            raise ControlError(f"{op}: VF {index} of {self.nic.name} is not present", "ENODEV")
        return vf

    def port_name(self, args: Args) -> str:
        port = str(args.get("port", ""))
        if port in self.nic.vf_by_port or port in self.nic.vports:
            return port
        raise ControlError(f"no port {port!r} on {self.nic.name}", "ENODEV")

    def eswitch_call(self, method: str, *params: Any) -> Any:
        return getattr(self.nic.eswitch, method)(*params)

    def port_op(self, args: Args, method: str, *params: Any) -> Args:
        port = self.port_name(args)
        self.eswitch_call(method, port, *params)
        return config_to_json(self.nic.eswitch.config(port))

    def port_set_config(self, args: Args) -> Args:
        """A port's whole configuration at once, under its policy: what a migrated guest's
        vport had on the source NIC, replayed at the destination before the guest resumes."""
        port = self.port_name(args)
        config = config_from_json(args["config"])
        config.enabled = self.nic.eswitch.config(port).enabled
        self.eswitch_call("replace_config", port, config)
        return config_to_json(self.nic.eswitch.config(port))

    @staticmethod
    def lever(action: Callable[[], None]) -> Args:
        action()
        return {}

    # -- VF operations --------------------------------------------------------

    def acquire(self, args: Args) -> Args:
        owner = str(args["owner"])
        nic = self.nic
        wanted = args.get("vf")
        candidates = [nic.vfs[int(wanted)]] if wanted is not None else nic.vfs
        free = [vf for vf in candidates if vf.state == "free"]
        if not free:
            raise ControlError(f"VF_ACQUIRE: no free VF on {nic.name} for {owner}", "EBUSY")
        vectors = int(args.get("vectors", nic.model.queues))
        if vectors > nic.vector_pool:
            raise ControlError(
                f"VF_ACQUIRE: out of interrupt vectors on {nic.name}: {owner} needs {vectors}, "
                f"{nic.vector_pool} free",
                "ENOSPC",
            )
        vf = free[0]
        vf.acquire(owner, vectors)
        nic.vector_pool -= vectors
        return {
            "vf": vf.index,
            "version": nic.model.plugin_version,
            "features": sorted(vf.offered_features()),
            "mtu": 9000,
            "queues": nic.model.queues,
            "vectors": vectors,
        }

    def init(self, args: Args) -> Args:
        vf = self.vf(args, "VF_INIT")
        config = config_from_json(args["config"]) if args.get("config") else None
        if config is None and f"vport:{vf.owner}" in self.nic.vports:
            config = self.nic.eswitch.config(f"vport:{vf.owner}")
        if config is None:
            raise ControlError(
                "VF_INIT: no port configuration given and the owner has no vport", "EINVAL"
            )
        config.enabled = False
        vf.init(str(args["memory"]), (args.get("state") or {}).get("rings"))
        if args.get("policy"):
            self.policies[str(vf.owner)] = policy_from(args)
        policy = self.policies.get(str(vf.owner), PortPolicy())
        if vf.port in self.nic.eswitch.ports():
            self.nic.eswitch.remove_port(vf.port)
        self.nic.eswitch.add_port(vf.port, config, policy)
        return {"vf": vf.index, "state": vf.state}

    def activate(self, args: Args) -> Args:
        vf = self.vf(args, "VF_ACTIVATE")
        vf.need("VF_ACTIVATE", "ready", "quiesced")
        excess = vf.enabled_features() - vf.offered_features()
        if excess:
            raise ControlError(
                f"VF_ACTIVATE: the driver enabled {', '.join(sorted(excess))}, which VF {vf.index} "
                "does not offer",
                "EINVAL",
            )
        self.nic.activate(vf, tx_fence=bool(args.get("tx_fence", False)))
        return {"vf": vf.index, "state": vf.state}

    def quiesce(self, args: Args) -> Args:
        vf = self.vf(args, "VF_QUIESCE")
        vf.need("VF_QUIESCE", "active", "ready", "quiesced")
        self.nic.quiesce(vf)
        return {"vf": vf.index, "state": vf.state, "left": self.nic.left_posted(vf)}

    def save_state(self, args: Args) -> Args:
        vf = self.vf(args, "VF_SAVE_STATE")
        state = vf.save_state()
        state["port"] = config_to_json(self.nic.eswitch.config(vf.port))
        return state

    def release(self, args: Args) -> Args:
        vf = self.vf(args, "VF_RELEASE")
        vectors = vf.vectors
        self.nic._deactivate(vf)
        vf.release()
        self.nic.vector_pool += vectors
        if vf.port in self.nic.eswitch.ports():
            self.nic.eswitch.remove_port(vf.port)
        return {"vf": vf.index, "state": vf.state}

    def queue_status(self, args: Args) -> Args:
        return self.vf(args, "GET_QUEUE_STATUS").describe()

    # -- vports and levers ----------------------------------------------------

    def vport_add(self, args: Args) -> Args:
        guest = str(args["guest"])
        port = f"vport:{guest}"
        policy = policy_from(args)
        config = config_from_json({"mac": args["mac"], "mtu": args.get("mtu", 1500)})
        if port in self.nic.eswitch.ports():
            self.nic.eswitch.remove_port(port)
        self.nic.eswitch.add_port(port, config, policy, sends_disabled=True)
        self.policies[guest] = policy
        peer = str(args["socket"])
        self.nic.vports[port] = peer
        self.nic.vport_by_peer[peer] = port
        self.nic.eswitch.enable(port)
        return {"port": port}

    def vport_del(self, args: Args) -> Args:
        port = f"vport:{args['guest']}"
        peer = self.nic.vports.pop(port, None)
        if peer is not None:
            self.nic.vport_by_peer.pop(peer, None)
        if port in self.nic.eswitch.ports():
            self.nic.eswitch.remove_port(port)
        return {}

    def remove(self, args: Args) -> Args:
        vf = self.vf(args, "VF_REMOVE")
        owner = vf.owner
        self.nic.vector_pool += vf.vectors
        self.nic._vf_gone(vf)
        if vf.port in self.nic.eswitch.ports():
            self.nic.eswitch.remove_port(vf.port)
        self.nic.control.publish("vf-removed", vf=vf.index, owner=owner, reason="surprise removal")
        return {"vf": vf.index, "owner": owner}

    def restore(self, args: Args) -> Args:
        index = int(args["vf"])
        vf = self.nic.vfs[index]
        if vf.state != "absent":
            raise ControlError(f"VF_RESTORE: VF {index} is present ({vf.state})", "EEXIST")
        vf.enumerate()
        self.nic.selector.register(vf.doorbell, 1, vf.doorbell.drain)  # type: ignore[arg-type,union-attr]
        self.nic.control.publish("vf-added", vf=index, nic=self.nic.name)
        return {"vf": index, "state": vf.state}

    def inject(self, args: Args) -> Args:
        op = str(args["target"])
        if op not in self.table:
            raise ControlError(f"INJECT: unknown operation {op!r}", "EINVAL")
        self.nic.injected[op] = str(args.get("message", "failure injected by the bench"))
        return {"armed": op}

    def pause(self, args: Args) -> Args:
        """Stop (or restart) taking frames from a VF's TX rings: link-partner flow control."""
        vf = self.vf(args, "PAUSE")
        if args.get("on", True):
            self.nic.paused.add(vf.index)
        else:
            self.nic.paused.discard(vf.index)
        return {"paused": sorted(self.nic.paused)}

    def set_vf_features(self, args: Args) -> Args:
        """What the VFs offer from now on (a board build without some offloads)."""
        features = frozenset(str(f) for f in args["features"])
        unknown = features - frozenset(w.FEATURE_BITS)
        if unknown:
            raise ControlError(f"unknown features {sorted(unknown)}", "EINVAL")
        self.nic.vf_features = features
        for vf in self.nic.vfs:
            vf.offer(features)
        return {"features": sorted(features)}

    def vectors(self, args: Args) -> Args:
        self.nic.vector_pool = int(args["free"])
        return {"free": self.nic.vector_pool}
