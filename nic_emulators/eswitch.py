"""The embedded switch of an emulated SR-IOV NIC: port configuration, forwarding, counters.

Ports are the ``"uplink"`` (the wire), VF ports (``"vf0"``...) and vports
(``"vport:<guest>"``, emulated guests whose frames come in through the PF).
The switch is pure logic: the NIC process hands it a frame and the port it
came from and gets back ``(port, frame)`` pairs to put on rings, sockets or
the wire. Keeping I/O out makes the forwarding rules testable frame by frame
and keeps the per-frame cost down to what the rules need.

Speed: ``from_port``/``from_uplink`` run once per frame in the NIC's event
loop (target: well over 100k frames/s on one core); ``from_port_many`` takes
a port's frames a batch at a time, reading its settings once. Each port's settings are
therefore copied out of its ``PortConfig`` into slots when they change, the
unicast table maps MAC bytes straight to the enabled port, the lists of
enabled and of promiscuous ports are prebuilt, and a frame is only sliced,
never parsed into objects. Configuration changes are rare and may be slow:
they rebuild those tables from scratch, which keeps them obviously right.

Counters follow each port's own point of view: a VF's ``tx`` is what it sent
into the switch (counted only when the switch took the frame), its ``rx`` is
what was delivered to it; the uplink's ``tx`` is what went onto the wire and
its ``rx`` what came from the wire.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from nic_emulators.config import PortPolicy
from nic_emulators.frames import BROADCAST, ETH_HLEN, TPID, UNTAGGED, mac_str, vlan_tag
from nic_emulators.port_config import (
    PolicyError,
    PortConfig,
    check_antispoof,
    check_config,
    check_default_vlan,
    check_mac,
    check_mtu,
    check_multicast,
    check_vlan_range,
    check_vlans_allowed,
)

UPLINK = "uplink"
#: Every drop reason; each appears as ``drop_<reason>`` in every port's counters.
DROP_REASONS = ("disabled", "runt", "mtu", "spoofed", "vlan", "filtered", "no_port")
_TAGGED_HLEN = ETH_HLEN + 4

Delivery = list[tuple[str, bytes]]


class _Counters:
    """Packet, byte and drop counts of one port, plus the baseline of ``read_deltas``."""

    __slots__ = ("drops", "last", "name", "rx_bytes", "rx_packets", "tx_bytes", "tx_packets")

    def __init__(self, name: str) -> None:
        self.name = name
        self.tx_packets = 0
        self.tx_bytes = 0
        self.rx_packets = 0
        self.rx_bytes = 0
        self.drops: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.last: dict[str, int] = {}

    def totals(self) -> dict[str, int]:
        out = {
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
        }
        for reason, count in self.drops.items():
            out["drop_" + reason] = count
        return out


class _Port(_Counters):
    """A VF or vport: its config and policy, and the settings the fast path reads, as slots."""

    __slots__ = (
        "allmulti",
        "antispoof",
        "broadcast",
        "config",
        "default_tag",
        "default_vid",
        "enabled",
        "mac",
        "mtu",
        "multicast",
        "policy",
        "promisc",
        "sends_disabled",
        "vlans",
    )

    def __init__(
        self, name: str, config: PortConfig, policy: PortPolicy, sends_disabled: bool
    ) -> None:
        super().__init__(name)
        self.policy = policy
        self.sends_disabled = sends_disabled
        self.load(config)

    def load(self, config: PortConfig) -> None:
        self.config = config
        self.mac = config.mac
        self.multicast = config.multicast
        self.promisc = config.promisc
        self.allmulti = config.allmulti
        self.broadcast = config.broadcast
        self.vlans = config.vlans
        vid = config.default_vlan
        # UNTAGGED (-1) for "no port VLAN" keeps the per-frame comparisons int-to-int.
        self.default_vid = UNTAGGED if vid is None else vid
        self.default_tag = None if vid is None else vlan_tag(vid)
        self.antispoof = config.antispoof
        self.mtu = config.mtu
        self.enabled = config.enabled


def _vlan_rx(q: _Port, frame: bytes, vid: int) -> bytes | None:
    """The VLAN half of a port's RX filter: the frame as the port gets it, or None.

    A port with a port VLAN sees only that VLAN, untagged; any other port sees
    untagged frames and the VLANs it joined, tagged.
    """
    if q.default_vid != UNTAGGED:
        if vid != q.default_vid:
            return None
        return frame[:12] + frame[16:]
    if vid == UNTAGGED or vid in q.vlans:
        return frame
    return None


def _own_copy(config: PortConfig) -> PortConfig:
    """A copy with frozen sets: a caller changing its object later cannot reach the switch."""
    return dataclasses.replace(
        config, multicast=frozenset(config.multicast), vlans=frozenset(config.vlans)
    )


class ESwitch:
    """One NIC's embedded switch. Not thread-safe: owned by the NIC's event loop."""

    def __init__(self) -> None:
        self._ports: dict[str, _Port] = {}
        self._uplink = _Counters(UPLINK)
        # Rebuilt by _reindex() after every config change; read per frame.
        self._by_mac: dict[bytes, _Port] = {}
        self._enabled: tuple[_Port, ...] = ()
        self._promisc: tuple[_Port, ...] = ()
        #: Frames handed to from_port() for a port that does not exist (a
        #: removed vport's last frames): no port to count them on.
        self.unknown_source = 0

    # -- configuration ---------------------------------------------------

    def ports(self) -> list[str]:
        """Names of the VF and vport ports, in the order they were added."""
        return list(self._ports)

    def add_port(
        self, name: str, config: PortConfig, policy: PortPolicy, *, sends_disabled: bool = False
    ) -> None:
        """Add a port (disabled unless ``config.enabled``).

        ``sends_disabled``: the port may still send while disabled — a vport whose
        guest moved to a VF drains the frames its emulation path still carries.
        """
        if name == UPLINK:
            raise PolicyError("EINVAL", f"port {name}: add refused: the uplink is not a VF/vport")
        if name in self._ports:
            raise PolicyError("EEXIST", f"port {name}: add refused: the port exists")
        config = _own_copy(config)
        check_config(name, config, policy, None)
        if config.enabled:
            self._check_mac_free(name, config.mac, "add")
        self._ports[name] = _Port(name, config, policy, sends_disabled)
        self._reindex()

    def remove_port(self, name: str) -> None:
        """Forget the port, its counters included (a new port of that name starts at 0)."""
        self._port(name)
        del self._ports[name]
        self._reindex()

    def config(self, port: str) -> PortConfig:
        """A copy: changing it changes nothing until handed to ``replace_config``."""
        return dataclasses.replace(self._port(port).config)

    def policy(self, port: str) -> PortPolicy:
        return self._port(port).policy

    def replace_config(self, port: str, config: PortConfig) -> None:
        """Install a whole config (VF_INIT from a saved state), under the port's policy."""
        p = self._port(port)
        config = _own_copy(config)
        check_config(port, config, p.policy, p.config)
        self._commit(p, config, "config")

    def set_mac(self, port: str, mac: bytes) -> None:
        p = self._port(port)
        check_mac(port, p.mac, mac, p.policy)
        self._commit(p, dataclasses.replace(p.config, mac=mac), "MAC")

    def set_multicast(self, port: str, macs: Iterable[bytes]) -> None:
        p = self._port(port)
        group = frozenset(macs)
        check_multicast(port, group)
        self._commit(p, dataclasses.replace(p.config, multicast=group), "multicast")

    def set_rx_mode(self, port: str, promisc: bool, allmulti: bool, broadcast: bool) -> None:
        p = self._port(port)
        new = dataclasses.replace(p.config, promisc=promisc, allmulti=allmulti, broadcast=broadcast)
        self._commit(p, new, "RX mode")

    def add_vlan_range(self, port: str, lo: int, hi: int) -> None:
        p = self._port(port)
        check_vlan_range(port, lo, hi)
        check_vlans_allowed(port, "VLAN", range(lo, hi + 1), p.policy)
        vlans = p.vlans | frozenset(range(lo, hi + 1))
        self._commit(p, dataclasses.replace(p.config, vlans=vlans), "VLAN")

    def del_vlan_range(self, port: str, lo: int, hi: int) -> None:
        """Leave VLANs lo..hi; ids not joined are ignored (leaving is never a policy matter)."""
        p = self._port(port)
        check_vlan_range(port, lo, hi)
        vlans = p.vlans - frozenset(range(lo, hi + 1))
        self._commit(p, dataclasses.replace(p.config, vlans=vlans), "VLAN")

    def set_default_vlan(self, port: str, vid: int | None) -> None:
        p = self._port(port)
        check_default_vlan(port, vid, p.policy)
        self._commit(p, dataclasses.replace(p.config, default_vlan=vid), "default VLAN")

    def set_antispoof(self, port: str, on: bool) -> None:
        p = self._port(port)
        check_antispoof(port, on, p.policy)
        self._commit(p, dataclasses.replace(p.config, antispoof=on), "antispoof")

    def set_mtu(self, port: str, mtu: int) -> None:
        p = self._port(port)
        check_mtu(port, mtu, p.policy)
        self._commit(p, dataclasses.replace(p.config, mtu=mtu), "MTU")

    def enable(self, port: str) -> None:
        """Let the port send and receive; EBUSY while another enabled port has its MAC.

        A guest's VF port and its vport share the guest's MAC; unicast can go
        to only one of them, so the switch of a guest between passthrough
        and emulation must disable one before enabling the other.
        """
        p = self._port(port)
        self._commit(p, dataclasses.replace(p.config, enabled=True), "enable")

    def disable(self, port: str) -> None:
        p = self._port(port)
        self._commit(p, dataclasses.replace(p.config, enabled=False), "disable")

    def _port(self, name: str) -> _Port:
        p = self._ports.get(name)
        if p is None:
            raise PolicyError("ENOENT", f"port {name}: no such port")
        return p

    def _check_mac_free(self, name: str, mac: bytes, setting: str) -> None:
        other = self._by_mac.get(mac)
        if other is not None and other.name != name:
            raise PolicyError(
                "EBUSY",
                f"port {name}: {setting} refused: MAC {mac_str(mac)} is in use by "
                f"enabled port {other.name}; disable that port first",
            )

    def _commit(self, p: _Port, config: PortConfig, setting: str) -> None:
        if config.enabled:
            self._check_mac_free(p.name, config.mac, setting)
        p.load(config)
        self._reindex()

    def _reindex(self) -> None:
        enabled = tuple(p for p in self._ports.values() if p.enabled)
        self._enabled = enabled
        self._promisc = tuple(p for p in enabled if p.promisc)
        self._by_mac = {p.mac: p for p in enabled}

    # -- counters ----------------------------------------------------------

    def _counters(self, port: str) -> _Counters:
        return self._uplink if port == UPLINK else self._port(port)

    def counters(self, port: str) -> dict[str, int]:
        """Totals since the port was added: packets, bytes and ``drop_<reason>`` for each reason."""
        return self._counters(port).totals()

    def read_deltas(self, port: str) -> dict[str, int]:
        """Change since this port's previous ``read_deltas`` (GET_QUEUE_STATS semantics)."""
        c = self._counters(port)
        now = c.totals()
        last = c.last
        c.last = now
        return {key: value - last.get(key, 0) for key, value in now.items()}

    # -- forwarding ----------------------------------------------------------

    def from_port(self, port: str, frame: bytes) -> Delivery:
        """Forward a frame a VF or vport sent; returns where it goes (possibly nowhere).

        Checks in order, each failure a drop counted on the source port:
        disabled, runt, mtu, spoofed, vlan. Then a port VLAN is inserted and
        the frame is delivered by destination MAC, never back to the source.
        """
        out: Delivery = []
        self.from_port_many(port, (frame,), out)
        return out

    def from_port_many(
        self, port: str, frames: Iterable[bytes], out: Delivery, wire: list[bytes] | None = None
    ) -> None:
        """``from_port`` for frames one port sent, in order, their deliveries appended to
        ``out``: the port's settings are read once for the lot (a VF's TX poll hands over
        tens of frames at a time). With ``wire``, what goes to the uplink is appended
        there instead, as bare frames (in order: the wire's share of the deliveries)."""
        p = self._ports.get(port)
        if p is None:
            self.unknown_source += sum(1 for _ in frames)
            return
        if not p.enabled and not p.sends_disabled:
            p.drops["disabled"] += sum(1 for _ in frames)
            return
        by_mac, append = self._by_mac, out.append
        to_wire = (lambda frame: append((UPLINK, frame))) if wire is None else wire.append
        wired = wired_bytes = 0
        for frame, vid in self._admit(p, frames):
            dst = frame[0:6]
            if not dst[0] & 1:
                q = by_mac.get(dst)
                if q is None or q is p:
                    wired += 1
                    wired_bytes += len(frame)
                    to_wire(frame)
                    continue
                got = _vlan_rx(q, frame, vid)
                if got is None:
                    q.drops["filtered"] += 1
                    continue
                q.rx_packets += 1
                q.rx_bytes += len(got)
                append((q.name, got))
                continue
            self._flood(p, frame, dst, vid, out)
            wired += 1
            wired_bytes += len(frame)
            to_wire(frame)
        up = self._uplink
        up.tx_packets += wired
        up.tx_bytes += wired_bytes

    @staticmethod
    def _admit(p: _Port, frames: Iterable[bytes]) -> list[tuple[bytes, int]]:
        """The frames ``p`` may send, each with its VLAN (a port VLAN inserted), in order;
        the others dropped and counted: runt, mtu, spoofed, vlan."""
        drops, mtu, antispoof, mac = p.drops, p.mtu, p.antispoof, p.mac
        default_vid, default_tag, vlans = p.default_vid, p.default_tag, p.vlans
        admitted: list[tuple[bytes, int]] = []
        append = admitted.append
        nbytes = 0
        for frame in frames:
            n = len(frame)
            if n < ETH_HLEN:
                drops["runt"] += 1
                continue
            tagged = frame[12:14] == TPID
            if tagged:
                if n < _TAGGED_HLEN:
                    drops["runt"] += 1
                    continue
                payload = n - _TAGGED_HLEN
            else:
                payload = n - ETH_HLEN
            if payload > mtu:
                drops["mtu"] += 1
                continue
            if antispoof and frame[6:12] != mac:
                drops["spoofed"] += 1
                continue
            sent, vid = frame, UNTAGGED
            if tagged:
                vid = ((frame[14] & 0x0F) << 8) | frame[15]
                if default_vid != UNTAGGED or vid not in vlans:
                    drops["vlan"] += 1
                    continue
            elif default_tag is not None:
                sent, vid = frame[:12] + default_tag + frame[12:], default_vid
            nbytes += n
            append((sent, vid))
        p.tx_packets += len(admitted)
        p.tx_bytes += nbytes
        return admitted

    def from_uplink(self, frame: bytes) -> Delivery:
        """Forward a frame from the wire to the ports that accept it.

        Known unicast goes to its port and to every promiscuous port; unknown
        unicast only to promiscuous ports (``drop_no_port`` on the uplink when
        it reaches none); broadcast and multicast to every accepting port.
        """
        up = self._uplink
        n = len(frame)
        if n < ETH_HLEN:
            up.drops["runt"] += 1
            return []
        if frame[12:14] == TPID:
            if n < _TAGGED_HLEN:
                up.drops["runt"] += 1
                return []
            vid = ((frame[14] & 0x0F) << 8) | frame[15]
        else:
            vid = UNTAGGED
        up.rx_packets += 1
        up.rx_bytes += n
        dst = frame[0:6]
        out: Delivery = []
        if dst[0] & 1:
            self._flood(None, frame, dst, vid, out)
            return out
        target = self._by_mac.get(dst)
        if target is not None:
            got = _vlan_rx(target, frame, vid)
            if got is None:
                target.drops["filtered"] += 1
            else:
                target.rx_packets += 1
                target.rx_bytes += len(got)
                out.append((target.name, got))
        for q in self._promisc:
            if q is not target:
                got = _vlan_rx(q, frame, vid)
                if got is not None:
                    q.rx_packets += 1
                    q.rx_bytes += len(got)
                    out.append((q.name, got))
        if target is None and not out:
            up.drops["no_port"] += 1
        return out

    def _flood(self, src: _Port | None, frame: bytes, dst: bytes, vid: int, out: Delivery) -> None:
        """Broadcast/multicast: append every enabled port but ``src`` whose RX filter accepts."""
        bcast = dst == BROADCAST
        for q in self._enabled:
            if q is src:
                continue
            if q.promisc or (q.broadcast if bcast else (q.allmulti or dst in q.multicast)):
                got = _vlan_rx(q, frame, vid)
                if got is not None:
                    q.rx_packets += 1
                    q.rx_bytes += len(got)
                    out.append((q.name, got))
