"""The checker's UDP sink (``recv --udp-sink PORT``) on the plain veth pair ``a <-> b``.

A one-way UDP stream to ``b``'s own address reaches ``b``'s IP stack after the
checker's packet socket has counted it. Without a socket on the port, ``b``
answers with ICMP port unreachable (rate-limited, but sent back through whatever
is under test); with the sink, ``b`` takes the stream quietly and the checker
still counts every frame.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.traffic import frames
from tests.traffic.conftest import MAC_A, MAC_B, Pair

PORT = 40001  # frames.udp's destination port
COUNT = 2000


def _unreachables_sent(pair: Pair, family: int) -> int:
    """ICMP (or ICMPv6) destination unreachables ``b`` has sent so far."""
    table = "/proc/net/snmp" if family == 4 else "/proc/net/snmp6"
    text = subprocess.run(
        ["ip", "netns", "exec", pair.net.ns("b"), "cat", table],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if family == 6:
        return next(int(line.split()[1]) for line in text.splitlines()
                    if line.startswith("Icmp6OutDestUnreachs"))  # fmt: skip
    head, values = (line.split() for line in text.splitlines() if line.startswith("Icmp:"))
    return int(values[head.index("OutDestUnreachs")])


def _stream(pair: Pair, family: int, *sink: str) -> tuple[dict[str, int], int]:
    """COUNT stamped UDP frames a -> b's address; (b's checker's flow, unreachables sent)."""
    src, dst = (pair.a_ip, pair.b_ip) if family == 4 else (pair.a_ip6, pair.b_ip6)
    frame, at = frames.udp(MAC_A, MAC_B, flow=3, src_ip=src, dst_ip=dst)
    net = pair.net
    before = _unreachables_sent(pair, family)
    recv = net.agent("b", "recv", "--iface", pair.b_iface, "--flow", "3", "--idle-exit", "0.3",
                     *sink)  # fmt: skip
    recv.wait_ready()
    sender = net.agent("a", "send", "--iface", pair.a_iface, "--frame-hex", frame.hex(),
                       "--payload-at", str(at), "--flow", "3",
                       "--pps", "5000", "--count", str(COUNT))  # fmt: skip
    sender.wait_ready()
    assert sender.result()["sent"] == COUNT
    flow = recv.result()["flows"]["3"]
    return flow, _unreachables_sent(pair, family) - before


@pytest.mark.parametrize("family", [4, 6])
def test_udp_sink_stops_port_unreachables(pair: Pair, family: int) -> None:
    """Steps: the same stream to b twice, first without, then with ``--udp-sink``.
    Verify: without, b answers with port unreachables; with, b sends none; both
    times the checker counts every frame once."""
    flow, unreachables = _stream(pair, family)
    assert flow["unique"] == COUNT and flow["duplicates"] == 0, flow
    assert unreachables > 0, "b's stack did not answer the stream: the test proves nothing"

    flow, unreachables = _stream(pair, family, "--udp-sink", str(PORT))
    assert flow["unique"] == COUNT and flow["duplicates"] == 0, flow
    assert unreachables == 0, f"b sent {unreachables} port unreachables with the sink bound"


def test_udp_sink_rejects_a_bad_port(pair: Pair) -> None:
    """Steps: start a checker with ``--udp-sink 70000``.
    Verify: it exits with a message naming the option, before READY."""
    recv = pair.net.agent("b", "recv", "--iface", pair.b_iface, "--udp-sink", "70000")
    code = recv.popen.wait(timeout=30)
    recv.kill()  # joins the output readers
    assert code != 0
    assert "--udp-sink 70000 is not a UDP port" in recv.diagnostics()
