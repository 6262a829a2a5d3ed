"""The checker's exact counts against impairments a forwarder really made.

Chain ``a -> f -> b``: the agent sends from ``a``, ``tests/traffic/forwarder.py``
in ``f`` drops, duplicates, holds back, corrupts or blacks out frames by seq,
the agent in ``b`` counts. Every expected figure comes from the forwarder's own
report or from the injection itself, never from the checker.
"""

from __future__ import annotations

from typing import Any

from tests.traffic import frames
from tests.traffic.conftest import MAC_A, MAC_B, Chain


def transfer(
    chain: Chain, send: tuple[str, ...], impair: tuple[str, ...] = (), idle_exit: float = 0.3
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(send report, flow 1 as counted in b, the whole recv report, forwarder report)."""
    net = chain.net
    fwd = net.forwarder("--left", chain.f_left, "--right", chain.f_right, *impair)
    fwd.wait_ready()
    recv = net.agent("b", "recv", "--iface", chain.b_iface, "--flow", "1",
                     "--idle-exit", str(idle_exit))  # fmt: skip
    recv.wait_ready()
    frame, at = frames.udp(MAC_A, MAC_B, flow=1)
    sender = net.agent("a", "send", "--iface", chain.a_iface, "--frame-hex", frame.hex(),
                       "--payload-at", str(at), "--flow", "1", *send)  # fmt: skip
    sender.wait_ready()
    sent = sender.result()
    got = recv.result()
    forwarded = fwd.stop()
    assert forwarded["socket_drops"] == 0, f"the forwarder itself lost frames: {forwarded}"
    assert got["ring_drops"] == 0, f"the checker's ring overflowed: {got}"
    return sent, got["flows"]["1"], got, forwarded


def test_injected_drops_are_counted_exactly(chain: Chain) -> None:
    """Steps: drop seqs 0, 100-102, 2500 and 4998 of 5000 at 20k pps.
    Verify: lost 6, missing ranges exactly those, no duplicates or reordering."""
    sent, flow, _, fwd = transfer(
        chain, ("--pps", "20000", "--count", "5000"), ("--drop", "0,100,101,102,2500,4998")
    )
    assert sent["sent"] == 5000
    assert fwd["dropped"] == [0, 100, 101, 102, 2500, 4998]
    assert sent["sent"] - flow["unique"] == 6
    assert flow["missing"] == [[0, 0], [100, 102], [2500, 2500], [4998, 4998]]
    assert flow["missing_total"] == 6
    assert (flow["first_seq"], flow["max_seq"]) == (1, 4999)
    assert (flow["duplicates"], flow["reordered"], flow["corrupt"]) == (0, 0, 0)
    assert flow["received"] == 4994


def test_duplicates_are_counted_exactly(chain: Chain) -> None:
    """Steps: forward seqs 10, 500, 501 and 4999 twice. Verify: 4 duplicates, nothing lost."""
    sent, flow, _, fwd = transfer(
        chain, ("--pps", "20000", "--count", "5000"), ("--dup", "10,500,501,4999")
    )
    assert fwd["duplicated"] == [10, 500, 501, 4999]
    assert (flow["unique"], flow["duplicates"], flow["received"]) == (5000, 4, 5004)
    assert sent["sent"] - flow["unique"] == 0
    assert flow["missing"] == [] and flow["reordered"] == 0


def test_reordering_is_counted_exactly(chain: Chain) -> None:
    """Steps: hold 100 until after 105, 2000 after 2001, 3000 after 3400.
    Verify: 3 reordered, nothing lost or duplicated."""
    sent, flow, _, fwd = transfer(
        chain, ("--pps", "20000", "--count", "5000"), ("--reorder", "100:105,2000:2001,3000:3400")
    )
    assert sorted(fwd["reordered"]) == [[100, 105], [2000, 2001], [3000, 3400]]
    assert flow["reordered"] == 3
    assert (flow["unique"], flow["duplicates"], flow["missing"]) == (5000, 0, [])
    assert sent["sent"] == 5000


def test_corrupt_frames_are_counted_not_believed(chain: Chain) -> None:
    """Steps: damage seqs 7 and 3000 (crc no longer matches). Verify: 2 corrupt, both missing."""
    _, flow, _, fwd = transfer(
        chain, ("--pps", "20000", "--count", "4000"), ("--corrupt", "7,3000")
    )
    assert fwd["corrupted"] == [7, 3000]
    assert flow["corrupt"] == 2
    assert flow["missing"] == [[7, 7], [3000, 3000]]
    assert (flow["unique"], flow["received"]) == (3998, 3998)


def test_blackout_is_measured_within_a_millisecond(chain: Chain) -> None:
    """Steps: 10k pps paced; the forwarder drops everything for 50 ms from seq 3000.
    Verify: the checker's longest gap is the forwarder's window (its rx stamps of the last
    frame before and the first after) within 1 ms, bounded by the same seqs, and the lost
    count is what the forwarder dropped."""
    sent, flow, _, fwd = transfer(
        chain, ("--pps", "10000", "--count", "8000"), ("--blackout", "3000:50"), idle_exit=0.4
    )
    black = fwd["blackout"]
    window_ns = black["first_after_rx_ns"] - black["last_before_rx_ns"]
    gap_ns = flow["longest_gap_ns"]
    assert abs(gap_ns - window_ns) <= 1_000_000, (
        f"checker gap {gap_ns / 1e6:.3f} ms vs forwarder window {window_ns / 1e6:.3f} ms"
    )
    assert 50_000_000 <= window_ns <= 53_000_000, f"window {window_ns / 1e6:.3f} ms"
    assert (flow["gap_seq_before"], flow["gap_seq_after"]) == (
        black["last_before_seq"],
        black["first_after_seq"],
    )
    assert black["last_before_seq"] == 2999
    lost = sent["sent"] - flow["unique"]
    assert lost == black["dropped_ours"] == black["first_after_seq"] - 3000
    assert flow["missing"] == [[3000, black["first_after_seq"] - 1]]
    # The timeline shows the hole: ~50 empty 1 ms buckets where the gap was.
    gap_end_bucket = (flow["gap_end_ns"] - flow["timeline"]["start_ns"]) // 1_000_000
    counts = flow["timeline"]["counts"]
    assert sum(counts) == flow["received"]
    assert sum(counts[gap_end_bucket - 48 : gap_end_bucket]) == 0


def test_clean_path_at_20k_pps_counts_everything(chain: Chain) -> None:
    """Steps: 20k pps for 1 s through the forwarder with no impairment.
    Verify: 0 lost, 0 duplicated, 0 reordered, 0 corrupt, no ring drops, sane latency."""
    sent, flow, got, fwd = transfer(chain, ("--pps", "20000", "--duration", "1"))
    assert sent["sent"] == 20000
    assert fwd["forwarded"]["fa->fb"] == 20000 + fwd["foreign"]["fa->fb"]
    assert (flow["unique"], flow["duplicates"], flow["reordered"], flow["corrupt"]) == (
        20000,
        0,
        0,
        0,
    )
    assert flow["missing"] == [] and flow["missing_total"] == 0
    lat = flow["latency_ns"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert got["foreign"] == 0
    assert 0.9 < (flow["last_rx_ns"] - flow["first_rx_ns"]) / 1e9 < 1.5
