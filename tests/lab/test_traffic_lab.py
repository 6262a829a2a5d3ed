"""Traffic through a real emulated lab: the CLI, the Python API, the TCP probe, captures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.lab import attach
from bench.traffic.capture import capture
from bench.traffic.engine import TrafficSpec, run_traffic
from bench.traffic.pcap import read_stamps, summarise
from bench.traffic.tcp import run_tcp_probe
from tests.labkit import leftovers, npabench, recorded_pids, write_topology


@pytest.fixture(scope="module")
def lab_path(tmp_path_factory: pytest.TempPathFactory):
    path, name = write_topology(tmp_path_factory.mktemp("traffic"), hosts=3)
    npabench("up", str(path), check=True)
    pids = recorded_pids(name)
    yield path
    npabench("down", str(path))
    assert leftovers(name, pids) == []


def _address(path: Path, host: str) -> str:
    status = json.loads(
        npabench("exec", str(path), host, "--", "ip -j -4 addr show uplink0").stdout
    )
    return status[0]["addr_info"][0]["local"]


def test_cli_one_way_udp_counts_every_frame(lab_path: Path) -> None:
    done = npabench(
        "traffic",
        str(lab_path),
        "--from",
        "h0",
        "--to",
        "h1",
        "--pps",
        "2000",
        "--duration",
        "1",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["sent"] == 2000
    assert result["unique"] == 2000 and result["lost"] == 0
    assert result["duplicates"] == 0 and result["reordered"] == 0 and result["exact"]
    assert 0.3 < result["longest_gap_ms"] < 50, "paced at 2000 pps: ~0.5 ms between frames"


def test_cli_both_ways_at_once(lab_path: Path) -> None:
    done = npabench(
        "traffic", str(lab_path), "--from", "h0", "--to", "h1", "--pps", "1000",
        "--duration", "1", "--both-ways", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    there, back = json.loads(done.stdout)
    assert (there["name"], there["flow"]) == ("h0 -> h1", 1)
    assert (back["name"], back["flow"]) == ("h1 -> h0", 2)
    for result in (there, back):
        assert result["sent"] == result["unique"] == 1000 and result["lost"] == 0
    # Both ran at the same time: their arrival windows overlap.
    assert abs(there["first_rx_ns"] - back["first_rx_ns"]) < 500_000_000


def test_round_trip_to_an_address_that_only_answers_icmp(lab_path: Path) -> None:
    """The reflector: an address no agent runs behind (here an extra address of h2, unknown
    to the topology) answers the echo requests with its kernel; h0 counts the replies."""
    h2 = _address(lab_path, "h2")
    extra = h2.rsplit(".", 1)[0] + ".200"
    npabench("exec", str(lab_path), "h2", "--", f"ip addr add {extra}/24 dev uplink0", check=True)
    try:
        with attach(lab_path) as lab:
            result = run_traffic(lab, TrafficSpec(source="h0", to=extra, pps=1000, duration_s=1))
    finally:
        npabench("exec", str(lab_path), "h2", "--", f"ip addr del {extra}/24 dev uplink0")
    assert result.name == f"h0 <-> {extra} (round-trip)"
    assert result.sent == 1000 and result.unique == 1000 and result.lost == 0
    assert 0 < result.latency_p50_us <= result.latency_p99_us <= result.latency_max_us


def test_tcp_stream_is_intact(lab_path: Path) -> None:
    with attach(lab_path) as lab:
        result = run_tcp_probe(lab, "h0", "h1", duration_s=1.0, rate_bytes_s=2_000_000)
    assert result.intact, result
    assert result.sent_bytes >= 1_000_000
    assert not result.reset


def test_capture_is_a_pcap_artifact_verified_offline(lab_path: Path, tmp_path: Path) -> None:
    pcap = tmp_path / "h1-uplink0.pcap"
    with attach(lab_path) as lab, capture(lab, "h1", "uplink0", pcap, bpf="udp"):
        result = run_traffic(lab, TrafficSpec(source="h0", to="h1", pps=500, duration_s=1))
    frames = read_stamps(pcap)
    summary = summarise(frames)
    assert result.unique == 500
    assert len(frames) == 500, "tcpdump saw exactly the frames the checker counted"
    flow = summary.flow(result.flow, "udp")
    assert flow.unique == 500 and flow.duplicates == 0 and not flow.missing
