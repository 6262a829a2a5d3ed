"""Fixtures: namespaces joined by veths, always torn down (processes by PID, then namespaces).

``chain``: generator ``a`` <-> forwarder ``f`` <-> checker ``b`` (no IP addresses:
the frames are pure layer-2 test traffic). ``pair``: ``a`` <-> ``b`` directly, with
IPv4 and IPv6 addresses and static neighbours, for the ICMP reflector.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.traffic.netns import Namespaces, can_run, ip

MAC_A = "02:4e:50:00:00:0a"
MAC_B = "02:4e:50:00:00:0b"


@dataclass(frozen=True)
class Chain:
    net: Namespaces
    a_iface: str = "va"
    b_iface: str = "vb"
    f_left: str = "fa"
    f_right: str = "fb"


@dataclass(frozen=True)
class Pair:
    net: Namespaces
    a_iface: str = "va"
    b_iface: str = "vb"
    a_ip: str = "192.0.2.1"
    b_ip: str = "192.0.2.2"
    a_ip6: str = "fd00:4e50::1"
    b_ip6: str = "fd00:4e50::2"


def _namespaces(roles: tuple[str, ...]) -> Namespaces:
    reason = can_run()
    if reason:
        pytest.skip(reason)
    return Namespaces(roles)


@pytest.fixture
def chain() -> Iterator[Chain]:
    net = _namespaces(("a", "f", "b"))
    try:
        net.create()
        net.veth(("a", "va", MAC_A), ("f", "fa", "02:4e:50:00:00:fa"))
        net.veth(("f", "fb", "02:4e:50:00:00:fb"), ("b", "vb", MAC_B))
        yield Chain(net)
    finally:
        net.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    net = _namespaces(("a", "b"))
    topo = Pair(net)
    try:
        net.create()
        for role in ("a", "b"):
            net.sysctl(role, "net.ipv6.conf.all.disable_ipv6", "0")
            net.sysctl(role, "net.ipv6.conf.default.accept_dad", "0")
        ip("-n", net.ns("a"), "link", "add", "va", "address", MAC_A, "type", "veth",
           "peer", "name", "vb", "address", MAC_B, "netns", net.ns("b"))  # fmt: skip
        sides = (("a", "va", topo.a_ip, topo.a_ip6), ("b", "vb", topo.b_ip, topo.b_ip6))
        for role, iface, addr, addr6 in sides:
            ns = net.ns(role)
            ip("-n", ns, "link", "set", iface, "addrgenmode", "none")
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", iface)
            ip("-n", ns, "addr", "add", f"{addr6}/64", "dev", iface, "nodad")
            ip("-n", ns, "link", "set", iface, "up")
        for role, iface, peer, peer6, mac in (
            ("a", "va", topo.b_ip, topo.b_ip6, MAC_B),
            ("b", "vb", topo.a_ip, topo.a_ip6, MAC_A),
        ):
            for addr in (peer, peer6):
                ip("-n", net.ns(role), "neigh", "replace", addr, "lladdr", mac,
                   "dev", iface, "nud", "permanent")  # fmt: skip
        yield topo
    finally:
        net.close()
