"""The FPGA NIC's CSR transport: wire format, register map, server and client.

Over real TCP sockets on 127.0.0.1: the server runs in a background thread with
its own selectors loop (as in the NIC emulator process) over a fake board.
"""

from __future__ import annotations

import contextlib
import queue
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TypeVar

import pytest

from drivers.csr_client import PIPELINE_WINDOW, CsrClient, CsrError
from nic_emulators.csr.protocol import (
    FRAME_SIZE,
    MAGIC,
    Op,
    ProtocolError,
    Response,
    Status,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from nic_emulators.csr.regmap import (
    ID_VALUE,
    REGISTERS,
    VERSION_VALUE,
    CsrFault,
    FpgaBoard,
    RegisterMap,
    register_address,
    register_name,
    vf_register,
)
from nic_emulators.csr.server import OUTPUT_HIGH_WATER, CsrServer

T = TypeVar("T")
DEADLINE = 5.0
R = REGISTERS


def wait_until(cond: Callable[[], bool], timeout: float = DEADLINE, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        time.sleep(0.005)


# -- a fake board and the loop ----------------------------------------------


COUNTER_KEYS = ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "drops")


class FakeBoard:
    def __init__(self, vf_total: int = 4) -> None:
        self.powered = True
        self.link_up = True
        self.vf_count = 2
        self.vf_total = vf_total
        self.macs: dict[int, bytes] = {}
        self.counters: dict[int, dict[str, int]] = {}
        self.link_calls: list[bool] = []
        self.resets: list[int] = []
        self.fail_counters = False
        self.light = True  # with no light on the fibre, enabling the link does not bring it up

    def vf_mac(self, vf: int) -> bytes:
        return self.macs.get(vf, b"\0" * 6)

    def vf_counters(self, vf: int) -> dict[str, int]:
        if self.fail_counters:
            raise RuntimeError("counter block on fire")
        return dict(self.counters.get(vf, dict.fromkeys(COUNTER_KEYS, 0)))

    def set_link(self, up: bool) -> None:
        self.link_calls.append(up)
        self.link_up = up and self.light

    def set_vf_count(self, n: int) -> None:
        if n > self.vf_total:
            raise ValueError(f"{n} VFs: the board has {self.vf_total}")
        self.vf_count = n

    def reset_vf(self, vf: int) -> None:
        self.resets.append(vf)
        self.counters.pop(vf, None)


def _board_conforms(board: FakeBoard) -> FpgaBoard:  # checked by mypy if run on tests
    return board


class Loop:
    """A selectors loop in a thread, run the way the NIC emulator runs its own."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._calls: queue.Queue[tuple[Callable[[], object], Future[object]]] = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._run_calls)
        self._stop = False
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="csr-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self.selector.select(0.5):
                try:
                    key.data()
                except BaseException as err:  # surfaced by the fixture
                    self.errors.append(err)

    def _run_calls(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)
        while True:
            try:
                fn, future = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn())
            except BaseException as err:
                future.set_exception(err)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the loop thread and return its result."""
        future: Future[object] = Future()
        self._calls.put((fn, future))
        self._wake_w.send(b"x")
        return future.result(timeout=DEADLINE)  # type: ignore[return-value]

    def registered(self) -> int:
        return self.call(lambda: len(self.selector.get_map()))

    def stop(self) -> None:
        self._stop = True
        self._wake_w.send(b"x")
        self.thread.join(DEADLINE)
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.stop()
    assert not lp.thread.is_alive()
    assert not lp.errors, lp.errors


@pytest.fixture
def board() -> FakeBoard:
    return FakeBoard()


@pytest.fixture
def regmap(board: FakeBoard) -> RegisterMap:
    return RegisterMap(board)


@pytest.fixture
def server(loop: Loop, regmap: RegisterMap) -> Iterator[CsrServer]:
    srv = loop.call(lambda: CsrServer(loop.selector, regmap))
    yield srv
    loop.call(srv.close)


@pytest.fixture
def client(server: CsrServer) -> Iterator[CsrClient]:
    with CsrClient("127.0.0.1", server.port, timeout=DEADLINE) as c:
        yield c


def raw_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        assert data, f"connection closed after {len(buf)} of {n} bytes"
        buf += data
    return buf


def recv_answers(sock: socket.socket, n: int) -> list[Response]:
    data = recv_exact(sock, n * FRAME_SIZE)
    return [decode_response(data[i : i + FRAME_SIZE]) for i in range(0, len(data), FRAME_SIZE)]


# -- wire format --------------------------------------------------------------


def test_frames_round_trip_big_endian() -> None:
    frame = encode_request(Op.WRITE, 0x1234, 0xDEADBEEF)
    assert frame == b"CS\x02\x00\x00\x00\x12\x34\xde\xad\xbe\xef"
    request = decode_request(frame)
    assert (request.op, request.addr, request.value) == (Op.WRITE, 0x1234, 0xDEADBEEF)
    answer = decode_response(encode_response(Status.READ_ONLY, 0x10, 7))
    assert (answer.status, answer.addr, answer.value, answer.ok) == (2, 0x10, 7, False)
    assert encode_response(Status.OK, 8, 1)[:4] == MAGIC + b"\x00\x00"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"XY\x01\x00" + bytes(8), "magic"),
        (b"CS\x07\x00" + bytes(8), "op"),
        (b"CS\x01\x01" + bytes(8), "flags"),
        (b"CS\x01\x00\x00\x00\x00\x08\x00\x00\x00\x01", "value"),
        (b"CS\x01\x00", "12 bytes"),
    ],
)
def test_decode_request_rejects(frame: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_request(frame)


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="32 bits"):
        encode_request(Op.WRITE, 0, 1 << 32)
    with pytest.raises(ValueError, match="32 bits"):
        encode_request(Op.READ, -4)
    with pytest.raises(ValueError, match="value 0"):
        encode_request(Op.READ, 0, 5)


def test_register_names_round_trip() -> None:
    assert register_address("SCRATCH") == 0x0008
    assert register_address("VF3.TX_BYTES_LO") == 0x1000 + 3 * 0x40 + 0x20
    for name in ("ID", "VF_RESET", "VF0.MAC_LO", "VF7.DROPS", "VF2.RX_PACKETS_HI"):
        assert register_name(register_address(name)) == name
    assert register_name(0x000C) is None
    assert register_name(0x1000 + 0x08) is None
    with pytest.raises(KeyError):
        register_address("VF1.NOPE")


# -- register map through the socket -----------------------------------------


def test_id_and_version(client: CsrClient) -> None:
    assert client.read(R["ID"]) == ID_VALUE == 0x4E504147
    assert ID_VALUE.to_bytes(4, "big") == b"NPAG"
    assert client.read(R["VERSION"]) == VERSION_VALUE == 0x00090000


def test_scratch_round_trip(client: CsrClient, regmap: RegisterMap) -> None:
    for pattern in (0, 0xFFFFFFFF, 0xA5A5A5A5, 0x5A5A5A5A, 0x00000001, 0x80000000):
        client.write(R["SCRATCH"], pattern)
        assert client.read(R["SCRATCH"]) == pattern
    assert regmap.scratch == 0x80000000
    with pytest.raises(ValueError, match="32-bit"):
        client.write(R["SCRATCH"], 1 << 32)


def test_status_reflects_power_and_link(client: CsrClient, board: FakeBoard, loop: Loop) -> None:
    assert client.read(R["STATUS"]) == 0b11
    loop.call(lambda: setattr(board, "link_up", False))
    assert client.read(R["STATUS"]) == 0b01
    loop.call(lambda: setattr(board, "powered", False))
    assert client.read(R["STATUS"]) == 0b00
    assert client.read(R["ID"]) == ID_VALUE  # identity answers without power
    with pytest.raises(CsrError, match="powered off") as err:
        client.read(R["SCRATCH"])
    assert err.value.status == Status.POWERED_OFF
    with pytest.raises(CsrError, match="powered off"):
        client.read(vf_register(0, "MAC_LO"))
    loop.call(lambda: setattr(board, "powered", True))
    loop.call(lambda: setattr(board, "link_up", True))
    assert client.read(R["STATUS"]) == 0b11


def test_control_drives_link(client: CsrClient, board: FakeBoard) -> None:
    client.write(R["CONTROL"], 0)
    assert board.link_calls == [False]
    assert not board.link_up
    assert client.read(R["CONTROL"]) == 0
    assert client.read(R["STATUS"]) & 0b10 == 0
    client.write(R["CONTROL"], 0xFFFF_FFF1)  # only bit0 counts
    assert board.link_calls == [False, True]
    assert client.read(R["CONTROL"]) == 1


def test_control_reads_actual_link_state(client: CsrClient, board: FakeBoard) -> None:
    board.light = False
    board.link_up = False
    client.write(R["CONTROL"], 1)  # enabled, but the link stays down (no light)
    assert board.link_calls == [True]
    assert client.read(R["CONTROL"]) == 0


def test_vf_count_write_and_refusal(client: CsrClient, board: FakeBoard) -> None:
    assert client.read(R["VF_TOTAL"]) == 4
    assert client.read(R["VF_COUNT"]) == 2
    client.write(R["VF_COUNT"], 4)
    assert board.vf_count == 4
    assert client.read(R["VF_COUNT"]) == 4
    with pytest.raises(CsrError) as err:
        client.write(R["VF_COUNT"], 5)
    assert err.value.status == Status.BAD_REQUEST
    assert "bad request" in str(err.value)
    assert "VF_COUNT (0x0024)" in str(err.value)
    assert board.vf_count == 4
    with pytest.raises(CsrError, match="read-only"):
        client.write(R["VF_TOTAL"], 8)


def test_vf_reset(client: CsrClient, board: FakeBoard) -> None:
    client.write(R["VF_RESET"], 1)
    assert board.resets == [1]
    assert client.read(R["VF_RESET"]) == 0
    with pytest.raises(CsrError, match="bad request") as err:
        client.write(R["VF_RESET"], 2)  # VF 2 exists but is not enabled (vf_count == 2)
    assert err.value.status == Status.BAD_REQUEST
    assert board.resets == [1]


def test_vf_mac(client: CsrClient, board: FakeBoard) -> None:
    board.macs[1] = bytes.fromhex("021122334455")
    assert client.read(vf_register(1, "MAC_LO")) == 0x22334455
    assert client.read(vf_register(1, "MAC_HI")) == 0x0211
    assert client.read_many([vf_register(0, "MAC_LO"), vf_register(0, "MAC_HI")]) == [0, 0]
    # a VF that exists on the board but is not enabled still has its block
    assert client.read(vf_register(3, "MAC_HI")) == 0


def test_vf_counters_64_bit(client: CsrClient, board: FakeBoard) -> None:
    board.counters[2] = {
        "tx_packets": 0x1_0000_0002,
        "tx_bytes": 0x1234_5678_9ABC_DEF0,
        "rx_packets": 7,
        "rx_bytes": 0xFFFF_FFFF_FFFF_FFFF,
        "drops": 1 << 40,
    }
    assert client.read64(vf_register(2, "TX_PACKETS_LO")) == 0x1_0000_0002
    assert client.read64(vf_register(2, "TX_BYTES_LO")) == 0x1234_5678_9ABC_DEF0
    assert client.read64(vf_register(2, "RX_PACKETS_LO")) == 7
    assert client.read64(vf_register(2, "RX_BYTES_LO")) == 0xFFFF_FFFF_FFFF_FFFF
    assert client.read(vf_register(2, "DROPS")) == 0xFFFF_FFFF  # saturated
    board.counters[2]["drops"] = 9
    assert client.read(vf_register(2, "DROPS")) == 9
    with pytest.raises(ValueError, match="low half"):
        client.read64(vf_register(2, "TX_BYTES_HI"))


def test_counter_lo_read_latches_hi(client: CsrClient, board: FakeBoard, loop: Loop) -> None:
    lo, hi = vf_register(0, "RX_BYTES_LO"), vf_register(0, "RX_BYTES_HI")
    board.counters[0] = dict.fromkeys(COUNTER_KEYS, 0) | {"rx_bytes": 0x1_FFFF_FFF0}
    assert client.read(lo) == 0xFFFF_FFF0
    # the counter carries into the high half between the two reads
    loop.call(lambda: board.counters[0].update(rx_bytes=0x2_0000_0005))
    assert client.read(hi) == 0x1  # latched with the LO read: 0x1_FFFF_FFF0 stays whole
    assert client.read(hi) == 0x2  # the latch was consumed: live value
    assert client.read64(lo) == 0x2_0000_0005
    # latches are per counter: reading another counter's LO does not disturb this one
    loop.call(lambda: board.counters[0].update(rx_bytes=0x3_0000_0000))
    assert client.read(lo) == 0
    loop.call(lambda: board.counters[0].update(rx_bytes=0x4_0000_0000))
    assert client.read(vf_register(0, "TX_BYTES_LO")) == 0
    assert client.read(hi) == 0x3


def test_bad_addresses(client: CsrClient) -> None:
    for addr in (0x000C, 0x0002, 0x0030, 0x0FFC, vf_register(0, "MAC_LO") + 0x08):
        with pytest.raises(CsrError, match="bad address") as err:
            client.read(addr)
        assert err.value.status == Status.BAD_ADDRESS
        assert f"{addr:#06x}" in str(err.value)
    # VF 4 does not exist on a 4-VF board
    with pytest.raises(CsrError, match="bad address") as err:
        client.read(vf_register(4, "MAC_LO"))
    assert "VF4.MAC_LO" in str(err.value)
    with pytest.raises(CsrError, match="bad address"):
        client.write(0x000C, 1)
    assert client.read(R["ID"]) == ID_VALUE  # the connection is still good


@pytest.mark.parametrize(
    "name", ["ID", "VERSION", "STATUS", "VF_TOTAL", "VF1.MAC_LO", "VF1.TX_BYTES_HI", "VF0.DROPS"]
)
def test_write_to_read_only(client: CsrClient, name: str) -> None:
    addr = register_address(name)
    with pytest.raises(CsrError) as err:
        client.write(addr, 1)
    assert err.value.status == Status.READ_ONLY
    assert err.value.addr == addr
    message = str(err.value)
    assert "read-only" in message
    assert f"{name} ({addr:#06x})" in message
    assert f"127.0.0.1:{client.port}" in message


def test_regmap_faults_directly(board: FakeBoard) -> None:
    regmap = RegisterMap(board)
    with pytest.raises(CsrFault) as err:
        regmap.write(R["ID"], 0)
    assert err.value.status == Status.READ_ONLY
    with pytest.raises(CsrFault) as err:
        regmap.read(0x0001)
    assert err.value.status == Status.BAD_ADDRESS
    regmap.write(R["SCRATCH"], 5)
    regmap.reset()
    assert regmap.read(R["SCRATCH"]) == 0


# -- the server's framing -----------------------------------------------------


def test_malformed_requests_answered_bad_request(server: CsrServer) -> None:
    with raw_connect(server.port) as sock:
        bad = [
            b"XX\x01\x00\x00\x00\x00\x08\x00\x00\x00\x00",  # wrong magic
            b"CS\x09\x00\x00\x00\x00\x08\x00\x00\x00\x00",  # unknown op
            b"CS\x01\x80\x00\x00\x00\x08\x00\x00\x00\x00",  # flags set
        ]
        sock.sendall(b"".join(bad) + encode_request(Op.READ, R["ID"]))
        answers = recv_answers(sock, 4)
    assert [a.status for a in answers] == [Status.BAD_REQUEST] * 3 + [Status.OK]
    assert [a.addr for a in answers[:3]] == [R["SCRATCH"]] * 3
    assert answers[3].value == ID_VALUE


@pytest.mark.parametrize("split", [1, 5, 11])
def test_partial_request_is_buffered(server: CsrServer, loop: Loop, split: int) -> None:
    frames = (
        encode_request(Op.WRITE, R["SCRATCH"], 0xC0FFEE)
        + encode_request(Op.READ, R["SCRATCH"])
        + encode_request(Op.READ, R["VERSION"])
    )
    with raw_connect(server.port) as sock:
        sock.sendall(frames[:split])
        wait_until(
            lambda: loop.call(lambda: [len(c.inbuf) for c in server.connections]) == [split],
            what="the server to buffer the first part",
        )
        # the second send completes the first frame, carries the second, and half the third
        sock.sendall(frames[split : FRAME_SIZE * 2 + 6])
        first = recv_answers(sock, 2)
        sock.sendall(frames[FRAME_SIZE * 2 + 6 :])
        second = recv_answers(sock, 1)
    assert [(a.status, a.value) for a in first] == [(0, 0xC0FFEE), (0, 0xC0FFEE)]
    assert (second[0].status, second[0].value) == (0, VERSION_VALUE)


def test_byte_by_byte(server: CsrServer) -> None:
    with raw_connect(server.port) as sock:
        for byte in encode_request(Op.READ, R["ID"]):
            sock.send(bytes([byte]))
        assert recv_answers(sock, 1)[0].value == ID_VALUE


def test_answers_after_half_close(server: CsrServer) -> None:
    with raw_connect(server.port) as sock:
        sock.sendall(b"".join(encode_request(Op.READ, a) for a in (0, 4, 8)) + b"CS")
        sock.shutdown(socket.SHUT_WR)
        answers = recv_answers(sock, 3)
        assert sock.recv(1) == b""  # then the server closes
    assert [a.value for a in answers] == [ID_VALUE, VERSION_VALUE, 0]


def test_board_exception_does_not_stop_the_loop(
    client: CsrClient, board: FakeBoard, caplog: pytest.LogCaptureFixture
) -> None:
    board.fail_counters = True
    with pytest.raises(CsrError, match="bad request"):
        client.read(vf_register(0, "DROPS"))
    assert "counter block on fire" in caplog.text
    board.fail_counters = False
    assert client.read(vf_register(0, "DROPS")) == 0


def test_client_that_does_not_read_is_held_back(
    server: CsrServer, loop: Loop, client: CsrClient
) -> None:
    """Pipelining far more than the buffers hold must neither block the loop nor grow it."""
    count = 40_000
    addrs = [R["ID"], R["VERSION"], R["SCRATCH"], R["STATUS"]]
    data = b"".join(encode_request(Op.READ, addrs[i % 4]) for i in range(count))
    # small socket buffers both ways, so the answers back up into the server's own buffer
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(DEADLINE)
        sock.connect(("127.0.0.1", server.port))
        wait_until(lambda: loop.call(lambda: len(server.connections)) == 1, what="accept")
        loop.call(
            lambda: server.connections[0].sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        )
        sender = threading.Thread(target=sock.sendall, args=(data,), daemon=True)
        sender.start()
        # the loop stays responsive to another client while this one reads nothing
        wait_until(
            lambda: (
                loop.call(lambda: sum(len(c.outbuf) for c in server.connections))
                >= OUTPUT_HIGH_WATER
            ),
            what="the answers to pile up",
        )
        assert client.read(R["ID"]) == ID_VALUE
        largest = loop.call(lambda: max(len(c.outbuf) for c in server.connections))
        assert largest <= OUTPUT_HIGH_WATER + FRAME_SIZE
        answers = recv_answers(sock, count)
        sender.join(DEADLINE)
        assert not sender.is_alive()
    assert [a.addr for a in answers] == [addrs[i % 4] for i in range(count)]
    assert all(a.ok for a in answers)


def test_leftover_answers_go_out_when_the_client_reads(server: CsrServer, loop: Loop) -> None:
    """All requests read, answers more than the socket buffers hold: the rest waits in the
    server and goes out as the client makes room, with no further input to wake it."""
    count = 4000
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(DEADLINE)
        sock.connect(("127.0.0.1", server.port))
        wait_until(lambda: loop.call(lambda: len(server.connections)) == 1, what="accept")
        loop.call(
            lambda: server.connections[0].sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        )
        sock.sendall(b"".join(encode_request(Op.READ, R["VERSION"]) for _ in range(count)))

        def backlog() -> tuple[int, int]:
            conn = server.connections[0]
            return len(conn.inbuf), len(conn.outbuf)

        wait_until(
            lambda: loop.call(backlog)[0] == 0 and loop.call(backlog)[1] > 0,
            what="every request read, answers waiting",
        )
        answers = recv_answers(sock, count)
    assert all(a.ok and a.value == VERSION_VALUE for a in answers)


# -- the client ----------------------------------------------------------------


def test_read_many_equals_individual_reads(client: CsrClient, board: FakeBoard) -> None:
    board.macs[0] = bytes.fromhex("0a0b0c0d0e0f")
    board.counters[1] = {k: i * 1000 + 1 for i, k in enumerate(COUNTER_KEYS)}
    addrs = [*R.values(), *(vf_register(vf, r) for vf in range(4) for r in ("MAC_LO", "DROPS"))]
    addrs = [a for a in addrs if a != R["VF_RESET"]] + [vf_register(1, "TX_BYTES_LO")]
    many = client.read_many(addrs)
    assert many == [client.read(a) for a in addrs]
    assert many[0] == ID_VALUE
    assert client.read_many([]) == []
    # more than one window
    long = [R["ID"], R["VERSION"]] * (PIPELINE_WINDOW + 3)
    assert client.read_many(long) == [ID_VALUE, VERSION_VALUE] * (PIPELINE_WINDOW + 3)


def test_read_many_reports_the_failing_register(client: CsrClient) -> None:
    with pytest.raises(CsrError, match=r"0x000c.*bad address"):
        client.read_many([R["ID"], 0x000C, R["VERSION"]])
    assert client.read_many([R["ID"], R["VERSION"]]) == [ID_VALUE, VERSION_VALUE]


def _serve_once(handler: Callable[[socket.socket], None]) -> tuple[int, threading.Thread]:
    """A one-connection test server; returns its port and thread."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(DEADLINE)

    def run() -> None:
        with listener, contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(DEADLINE)
                handler(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_read_many_is_pipelined() -> None:
    """A server that answers only once it holds every request: only a pipelining client gets
    answers (one that waits for each answer before the next request times out)."""
    addrs = [0x10 + 4 * i for i in range(10)]

    def handler(conn: socket.socket) -> None:
        data = recv_exact(conn, FRAME_SIZE * len(addrs))
        requests = [decode_request(data[i : i + FRAME_SIZE]) for i in range(0, len(data), 12)]
        conn.sendall(b"".join(encode_response(Status.OK, r.addr, r.addr * 3) for r in requests))
        with contextlib.suppress(OSError):
            conn.recv(1)

    port, thread = _serve_once(handler)
    with CsrClient("127.0.0.1", port, timeout=1.0) as c:
        assert c.read_many(addrs) == [a * 3 for a in addrs]
    thread.join(DEADLINE)


def test_read_many_is_faster_than_one_by_one(client: CsrClient) -> None:
    addrs = [R["ID"], R["VERSION"], R["SCRATCH"], R["STATUS"]] * 50

    def best(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    one_by_one = best(lambda: [client.read(a) for a in addrs])
    pipelined = best(lambda: client.read_many(addrs))
    assert pipelined < one_by_one / 2, (pipelined, one_by_one)


def test_server_close_means_powered_off(
    server: CsrServer, client: CsrClient, loop: Loop, regmap: RegisterMap
) -> None:
    assert client.read(R["ID"]) == ID_VALUE
    port = server.port
    before = loop.registered()
    loop.call(server.close)
    assert loop.registered() == before - 2  # the listener and the client's connection
    with pytest.raises(CsrError) as err:
        client.read(R["ID"])
    message = str(err.value)
    assert "powered off" in message
    assert f"127.0.0.1:{port}" in message
    assert "ID (0x0000)" in message
    with pytest.raises(CsrError, match="powered off"):
        CsrClient("127.0.0.1", port, timeout=1.0).read(R["VERSION"])
    # power on: a new endpoint on the same port, and the same client carries on
    again = loop.call(lambda: CsrServer(loop.selector, regmap, port=port))
    try:
        assert client.read(R["ID"]) == ID_VALUE
        # a power cycle between two calls is not an error: the dead connection is replaced
        loop.call(again.close)
        again = loop.call(lambda: CsrServer(loop.selector, regmap, port=port))
        assert client.read(R["VERSION"]) == VERSION_VALUE
    finally:
        loop.call(again.close)


def test_connection_closed_mid_request() -> None:
    def handler(conn: socket.socket) -> None:
        recv_exact(conn, FRAME_SIZE)  # then close without answering

    port, thread = _serve_once(handler)
    with CsrClient("127.0.0.1", port) as c, pytest.raises(CsrError) as err:
        c.read(R["SCRATCH"])
    assert "closed by the board (powered off?)" in str(err.value)
    assert "SCRATCH (0x0008)" in str(err.value)
    thread.join(DEADLINE)


def test_timeout_then_reconnect(loop: Loop, regmap: RegisterMap) -> None:
    """A server that never answers: the call times out, the client drops the connection,
    the late answer is never taken, and the next call reaches a good server."""
    accepted: queue.Queue[socket.socket] = queue.Queue()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    threading.Thread(target=lambda: accepted.put(listener.accept()[0]), daemon=True).start()

    client = CsrClient("127.0.0.1", port, timeout=0.3)
    start = time.monotonic()
    with pytest.raises(CsrError) as err:
        client.read(R["SCRATCH"])
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 2.0
    assert "no answer within 0.3 s" in str(err.value)
    assert "SCRATCH (0x0008)" in str(err.value)
    assert f"127.0.0.1:{port}" in str(err.value)

    silent = accepted.get(timeout=DEADLINE)
    listener.close()
    # the client dropped the connection at the timeout, before any further call
    silent.settimeout(DEADLINE)
    assert recv_exact(silent, FRAME_SIZE) == encode_request(Op.READ, R["SCRATCH"])
    assert silent.recv(16) == b""
    # the answer arrives late, into nothing; then the board comes back with a good endpoint
    with contextlib.suppress(OSError):
        silent.sendall(encode_response(Status.OK, R["SCRATCH"], 0xBAD))
    silent.close()
    regmap.scratch = 0x600D
    good = loop.call(lambda: CsrServer(loop.selector, regmap, port=port))
    try:
        assert client.read(R["SCRATCH"]) == 0x600D
        assert client.read(R["ID"]) == ID_VALUE
    finally:
        loop.call(good.close)
        client.close()


def test_unasked_for_answer_is_never_taken() -> None:
    """Bytes waiting on a kept connection before a call (a late or stray answer) make the
    client start over on a new connection instead of reading them as its answer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(2)
    listener.settimeout(DEADLINE)
    port = listener.getsockname()[1]
    connections: list[socket.socket] = []

    def run() -> None:
        with listener, contextlib.suppress(OSError):
            first, _ = listener.accept()
            connections.append(first)
            request = decode_request(recv_exact(first, FRAME_SIZE))
            first.sendall(encode_response(Status.OK, request.addr, 1))
            first.sendall(encode_response(Status.OK, R["SCRATCH"], 0xBAD))  # unasked for
            second, _ = listener.accept()
            connections.append(second)
            request = decode_request(recv_exact(second, FRAME_SIZE))
            second.sendall(encode_response(Status.OK, request.addr, 0x600D))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    with CsrClient("127.0.0.1", port) as c:
        assert c.read(R["SCRATCH"]) == 1
        kept = c._sock
        assert kept is not None
        wait_until(lambda: bool(select.select([kept], [], [], 0)[0]), what="the stray answer")
        assert c.read(R["SCRATCH"]) == 0x600D
    thread.join(DEADLINE)
    assert len(connections) == 2
    for conn in connections:
        conn.close()


def test_connect_refused_without_server() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # bound, never listened: nothing answers on it
    with CsrClient("127.0.0.1", port) as c, pytest.raises(CsrError) as err:
        c.write(R["SCRATCH"], 1)
    assert "connection refused" in str(err.value)
    assert "powered off" in str(err.value)
    assert "SCRATCH (0x0008)" in str(err.value)


def test_board_closes_the_endpoint_during_an_access(
    loop: Loop, regmap: RegisterMap, board: FakeBoard
) -> None:
    """Power going off as a side effect of a write: the server closes from inside its own
    callback; the loop carries on and the client is told the board went away."""
    holder: list[CsrServer] = []

    def power_off(up: bool) -> None:
        board.powered = False
        holder[0].close()

    board.set_link = power_off  # type: ignore[method-assign]
    holder.append(loop.call(lambda: CsrServer(loop.selector, regmap)))
    before = loop.registered()
    with CsrClient("127.0.0.1", holder[0].port) as c:
        assert c.read_many([R["ID"]]) == [ID_VALUE]
        with pytest.raises(CsrError, match="powered off"):
            c.write(R["CONTROL"], 0)
        with pytest.raises(CsrError, match="powered off"):
            c.read(R["ID"])
    assert loop.registered() == before - 1  # only the loop's own wake-up socket is left
