"""Two network namespaces joined by one veth pair: the traffic benchmarks' test bed."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class VethPair:
    a: str  # namespace of the sender
    b: str  # namespace of the receiver
    a_if: str
    b_if: str
    a_mac: str
    b_mac: str
    a_ip: str
    b_ip: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def veth_pair() -> Iterator[VethPair]:
    """Namespaces ``npb<hex>-a`` and ``-b`` with a veth between them; always removed."""
    tag = "npb" + secrets.token_hex(3)
    pair = VethPair(
        a=f"{tag}-a",
        b=f"{tag}-b",
        a_if="veth0",
        b_if="veth0",
        a_mac="02:4e:42:00:00:0a",
        b_mac="02:4e:42:00:00:0b",
        a_ip="198.19.250.1",
        b_ip="198.19.250.2",
    )
    try:
        _ip("netns", "add", pair.a)
        _ip("netns", "add", pair.b)
        _ip("-n", pair.a, "link", "add", "veth0", "type", "veth", "peer", "veth0", "netns", pair.b)
        for ns, mac, addr in ((pair.a, pair.a_mac, pair.a_ip), (pair.b, pair.b_mac, pair.b_ip)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", "veth0", "address", mac)
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "veth0")
            _ip("-n", ns, "link", "set", "veth0", "up")
        yield pair
    finally:
        for ns in (pair.a, pair.b):
            pids = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
            ).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-KILL", pid], check=False)
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
