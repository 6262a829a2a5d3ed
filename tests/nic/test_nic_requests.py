"""The vmxnet3 device's VF operations without waiting (``NicRequests``), against a real
control server on a UNIX socket: both ends in one selectors loop, as the NIC emulator and
the device process each run theirs."""

from __future__ import annotations

import selectors
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nic_emulators.control import DEFERRED, Connection, ControlError, ControlServer, Deferred
from nic_emulators.vmxnet3.nic_requests import NicRequests


class FakeNic:
    """A control server that answers ECHO at once, holds HOLD until told, refuses BAD."""

    def __init__(self, selector: selectors.BaseSelector, path: Path) -> None:
        self.server = ControlServer(selector, path, self.handle)
        self.held: list[tuple[Connection, int, dict[str, Any]]] = []

    def handle(
        self, conn: Connection, request_id: int, op: str, args: dict[str, Any]
    ) -> dict[str, Any] | Deferred:
        if op == "HOLD":
            self.held.append((conn, request_id, args))
            return DEFERRED
        if op == "BAD":
            raise ControlError("BAD: refused", "EPERM")
        return {"echo": args}

    def release(self) -> None:
        for conn, request_id, args in self.held:
            conn.answer(request_id, {"held": args})
        self.held.clear()


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[tuple[selectors.BaseSelector, FakeNic, Path]]:
    selector = selectors.DefaultSelector()
    nic = FakeNic(selector, tmp_path / "ctl.sock")
    yield selector, nic, tmp_path / "ctl.sock"
    nic.server.close()
    selector.close()


def run_until(selector: selectors.BaseSelector, done: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the loop did not get there"
        for key, _ in selector.select(0.05):
            key.data()


def test_replies_reach_their_steps_while_the_loop_runs_on(
    loop: tuple[selectors.BaseSelector, FakeNic, Path],
) -> None:
    selector, nic, path = loop
    replies: dict[int, dict[str, Any]] = {}
    requests = NicRequests(str(path), selector, replies.__setitem__)
    requests.ask(7, "HOLD", {"vf": 1})
    requests.ask(8, "ECHO", {"vf": 2})
    requests.ask(9, "BAD", {})
    # the held one does not hold up the others: the loop goes on and they are answered
    run_until(selector, lambda: 8 in replies and 9 in replies)
    assert 7 not in replies and nic.held
    assert replies[8] == {"id": 2, "ok": True, "result": {"echo": {"vf": 2}}}
    assert (replies[9]["ok"], replies[9]["code"]) == (False, "EPERM")
    nic.release()
    run_until(selector, lambda: 7 in replies)
    assert replies[7]["result"] == {"held": {"vf": 1}}
    requests.close()


def test_a_nic_that_goes_away_fails_what_waits_and_what_comes(
    loop: tuple[selectors.BaseSelector, FakeNic, Path],
) -> None:
    selector, nic, path = loop
    replies: dict[int, dict[str, Any]] = {}
    requests = NicRequests(str(path), selector, replies.__setitem__)
    requests.ask(1, "HOLD", {})
    run_until(selector, lambda: bool(nic.held))
    nic.server.close()  # the NIC emulator is gone
    run_until(selector, lambda: 1 in replies)
    assert (replies[1]["ok"], replies[1]["code"]) == (False, "EPIPE"), replies[1]
    requests.ask(2, "ECHO", {})  # asked after: refused at once, not left waiting
    assert (replies[2]["ok"], replies[2]["code"]) == (False, "EPIPE"), replies[2]


def test_an_unreachable_nic_is_a_control_error(tmp_path: Path) -> None:
    with selectors.DefaultSelector() as selector, pytest.raises(ControlError, match="cannot reach"):
        NicRequests(str(tmp_path / "nothing.sock"), selector, lambda seq, reply: None)
