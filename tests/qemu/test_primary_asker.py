"""The background question "does the guest hold a primary?" (a unit test of the helper;
the real question goes over a guest's console in tests/lab/test_qemu_failover_lab.py)."""

from __future__ import annotations

import threading
import time

import pytest

from bench.qemu.primary_asker import PrimaryAsker

DEADLINE_S = 5.0


def wait_until(condition: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S} s: {what}")
        time.sleep(0.001)


def test_a_yes_is_stamped_at_the_last_no() -> None:
    answers = iter([False, False, True])
    asked: list[float] = []

    def holds() -> bool:
        asked.append(time.time())
        return next(answers)

    with PrimaryAsker(holds, since=100.0, heard=lambda: False) as asker:
        wait_until(lambda: asker.done, "an answer")
    assert len(asked) == 3
    assert asker.error is None
    # the second "no" was answered after the second question was put, before the third
    assert asked[1] <= asker.found <= asked[2]  # type: ignore[operator]


def test_a_yes_at_once_is_stamped_at_since() -> None:
    with PrimaryAsker(lambda: True, since=100.0, heard=lambda: False) as asker:
        wait_until(lambda: asker.done, "an answer")
    assert asker.found == 100.0


def test_waiting_for_a_let_go() -> None:
    answers = iter([True, False])
    with PrimaryAsker(lambda: next(answers), since=1.0, heard=lambda: False, want=False) as asker:
        wait_until(lambda: asker.done, "an answer")
    assert asker.found is not None and asker.found > 1.0


def test_a_slow_question_does_not_hold_back_the_caller() -> None:
    release = threading.Event()
    started = threading.Event()

    def holds() -> bool:
        started.set()
        release.wait(DEADLINE_S)
        return True

    asker = PrimaryAsker(holds, since=1.0, heard=lambda: False)
    with asker:
        assert started.wait(DEADLINE_S)
        assert not asker.done  # the question is under way; the caller is free meanwhile
    release.set()  # stopped first: its late answer is not taken
    asker.join(DEADLINE_S)
    assert asker.found is None


def test_a_failing_question_is_handed_to_the_caller() -> None:
    def holds() -> bool:
        raise TimeoutError("console did not answer")

    with PrimaryAsker(holds, since=1.0, heard=lambda: False) as asker:
        wait_until(lambda: asker.done, "the error")
    assert isinstance(asker.error, TimeoutError)
    assert asker.found is None


@pytest.mark.parametrize("heard", [True, False])
def test_while_the_kernel_is_heard_the_guest_is_asked_seldom(heard: bool) -> None:
    asked: list[float] = []

    def holds() -> bool:
        asked.append(time.monotonic())
        return len(asked) >= 3

    with PrimaryAsker(holds, since=1.0, heard=lambda: heard) as asker:
        wait_until(lambda: asker.done, "an answer")
    spacing = asked[2] - asked[1]
    if heard:
        assert spacing >= 0.2
    else:
        assert spacing < 0.2
