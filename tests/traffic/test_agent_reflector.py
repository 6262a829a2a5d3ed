"""The agent on a plain veth pair ``a <-> b``: ICMP reflector, 802.1Q, stopping by signal.

In reflector mode only ``a`` runs agents: echo requests carry the stamp, ``b``'s
own kernel answers, and the checker on ``a`` counts the replies (latency is then
the round trip).
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.traffic import frames
from tests.traffic.conftest import MAC_A, MAC_B, Pair


@pytest.mark.parametrize("family", [4, 6])
def test_icmp_reflector_counts_the_targets_replies(pair: Pair, family: int) -> None:
    """Steps: send 3000 echo requests a -> b at 5k pps; count echo replies on a.
    Verify: every request answered once, in order; round trips are sane."""
    src, dst = (pair.a_ip, pair.b_ip) if family == 4 else (pair.a_ip6, pair.b_ip6)
    frame, at = frames.echo_request(MAC_A, MAC_B, src, dst, flow=7)
    net = pair.net
    recv = net.agent("a", "recv", "--iface", pair.a_iface, "--flow", "7",
                     "--idle-exit", "0.3", "--icmp-echo-reply")  # fmt: skip
    recv.wait_ready()
    sender = net.agent("a", "send", "--iface", pair.a_iface, "--frame-hex", frame.hex(),
                       "--payload-at", str(at), "--flow", "7",
                       "--pps", "5000", "--count", "3000")  # fmt: skip
    sender.wait_ready()
    sent = sender.result()
    got = recv.result()
    flow = got["flows"]["7"]
    assert sent["sent"] == 3000
    assert (flow["unique"], flow["duplicates"], flow["reordered"], flow["corrupt"]) == (
        3000,
        0,
        0,
        0,
    ), f"replies counted: {flow} (foreign {got['foreign']})"
    assert got["ring_drops"] == 0
    lat = flow["latency_ns"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"], lat
    assert lat["max"] < 1_000_000_000
    assert sent["first_tx_ns"] <= flow["first_rx_ns"] and sent["last_tx_ns"] <= flow["last_rx_ns"]


def test_reflector_mode_ignores_one_way_udp(pair: Pair) -> None:
    """Steps: UDP frames b -> a while a's checker counts echo replies only.
    Verify: none of them is counted as a reply; all are foreign."""
    frame, at = frames.udp(MAC_B, MAC_A, flow=7, src_ip=pair.b_ip, dst_ip=pair.a_ip)
    net = pair.net
    recv = net.agent("a", "recv", "--iface", pair.a_iface, "--icmp-echo-reply",
                     "--duration", "1.5")  # fmt: skip
    recv.wait_ready()
    sender = net.agent("b", "send", "--iface", pair.b_iface, "--frame-hex", frame.hex(),
                       "--payload-at", str(at), "--flow", "7",
                       "--pps", "2000", "--count", "1000")  # fmt: skip
    sender.wait_ready()
    assert sender.result()["sent"] == 1000
    got = recv.result()
    assert got["flows"] == {}
    assert got["foreign"] >= 1000


def test_vlan_tagged_frames_are_counted(pair: Pair) -> None:
    """Steps: 802.1Q-tagged UDP a -> b (the kernel may strip the tag before the ring).
    Verify: all counted, with two flows on one checker kept apart."""
    net = pair.net
    recv = net.agent("b", "recv", "--iface", pair.b_iface, "--idle-exit", "0.3")
    recv.wait_ready()
    senders = []
    for flow, vlan in ((3, 100), (4, None)):
        frame, at = frames.udp(MAC_A, MAC_B, flow=flow, vlan=vlan)
        sender = net.agent("a", "send", "--iface", pair.a_iface, "--frame-hex", frame.hex(),
                           "--payload-at", str(at), "--flow", str(flow),
                           "--pps", "5000", "--count", "2000")  # fmt: skip
        sender.wait_ready()
        senders.append(sender)
    assert [s.result()["sent"] for s in senders] == [2000, 2000]
    got = recv.result()
    assert sorted(got["flows"]) == ["3", "4"]
    for flow in got["flows"].values():
        assert (flow["unique"], flow["duplicates"], flow["reordered"]) == (2000, 0, 0)
        assert flow["missing"] == []


def test_sigterm_stops_both_with_exact_counts(pair: Pair) -> None:
    """Steps: an open-ended max-rate sender and a checker with no stop condition;
    SIGTERM the sender, then the checker.
    Verify: both print their report and exit 0; the checker saw every frame sent."""
    frame, at = frames.udp(MAC_A, MAC_B, flow=1)
    net = pair.net
    recv = net.agent("b", "recv", "--iface", pair.b_iface, "--flow", "1")
    recv.wait_ready()
    sender = net.agent("a", "send", "--iface", pair.a_iface, "--frame-hex", frame.hex(),
                       "--payload-at", str(at), "--flow", "1",
                       "--max-rate", "--duration", "600")  # fmt: skip
    sender.wait_ready()
    time.sleep(0.5)  # let it run for a while: this is the test's load, not synchronisation
    sender.popen.send_signal(signal.SIGINT)
    sent = sender.result(timeout=10)
    got = recv.stop(timeout=10)
    flow = got["flows"]["1"]
    assert sent["sent"] > 1000
    assert got["ring_drops"] == 0
    assert flow["unique"] == sent["sent"], f"sent {sent}, counted {flow['unique']}"
    assert flow["max_seq"] == sent["sent"] - 1
    assert sent["elapsed_s"] < 5
