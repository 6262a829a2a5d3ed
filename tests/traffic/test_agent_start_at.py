"""The generator's start barrier (``send --start-at EPOCH_S``) on the plain veth pair ``a <-> b``.

A generator started with ``--start-at`` says READY at once and sends its first
frame when the host's clock reads the time given, so generators launched one
after another start together.
"""

from __future__ import annotations

import time

from tests.traffic import frames
from tests.traffic.conftest import MAC_A, MAC_B, Pair

COUNT = 200


def _sender(pair: Pair, *extra: str):  # type: ignore[no-untyped-def]
    frame, at = frames.udp(MAC_A, MAC_B, flow=5, src_ip=pair.a_ip, dst_ip=pair.b_ip)
    return pair.net.agent("a", "send", "--iface", pair.a_iface, "--frame-hex", frame.hex(),
                          "--payload-at", str(at), "--flow", "5",
                          "--pps", "2000", "--count", str(COUNT), *extra)  # fmt: skip


def test_generators_wait_for_their_start_time(pair: Pair) -> None:
    """Steps: a checker on b; two generators on a, launched one after the other, both
    with the same ``--start-at`` 1.5 s ahead. Verify: both are READY before that time;
    neither sends a frame before it (one that did not wait sends ~1 s early); both first
    frames leave within 200 ms of it; every frame arrives."""
    recv = pair.net.agent("b", "recv", "--iface", pair.b_iface, "--idle-exit", "0.5")
    recv.wait_ready()
    start_at = time.time() + 1.5
    first, second = (_sender(pair, "--start-at", f"{start_at:.6f}")
                     for _ in range(2))  # fmt: skip
    first.wait_ready()
    second.wait_ready()
    ready_at = time.time()
    assert ready_at < start_at, "the generators took the whole wait to start: the test is moot"
    results = [first.result(), second.result()]
    for result in results:
        assert result["sent"] == COUNT, result
        late_ms = (result["first_tx_ns"] - start_at * 1e9) / 1e6
        assert 0 <= late_ms < 200, f"first frame {late_ms:.1f} ms after the start time: {result}"
    flow = recv.result()["flows"]["5"]
    assert flow["received"] == 2 * COUNT, flow  # two generators, the same seqs: each twice


def test_a_start_time_in_the_past_starts_at_once(pair: Pair) -> None:
    sender = _sender(pair, "--start-at", f"{time.time() - 3600:.6f}")
    sender.wait_ready()
    began = time.time()
    result = sender.result()
    assert result["sent"] == COUNT
    assert result["first_tx_ns"] / 1e9 - began < 1.0, result


def test_a_start_time_far_ahead_is_refused(pair: Pair) -> None:
    """A start an hour ahead is a clock or unit mistake: refused before READY, naming it."""
    sender = _sender(pair, "--start-at", f"{time.time() + 3600:.6f}")
    code = sender.popen.wait(timeout=30)
    sender.kill()  # joins the output readers
    assert code != 0
    assert "--start-at" in sender.diagnostics() and "ahead of this host's clock" in (
        sender.diagnostics()
    )
