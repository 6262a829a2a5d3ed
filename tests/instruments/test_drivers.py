"""The SCPI drivers against the SCPI emulators, through pyvisa-py over real TCP.

Each emulator is a subprocess (``python -m bench.instruments.emulators.server``);
the drivers reach it only by its VISA resource string, exactly as they reach a
real instrument.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.errors import UsageError
from bench.instruments import (
    ChannelOutOfRange,
    InstrumentBusy,
    InstrumentConnectionLost,
    InstrumentError,
    InstrumentIdentityError,
    InstrumentTimeout,
    OpticalAttenuator,
    PowerSupply,
    ScpiInstrument,
    driver_for,
    kinds,
    open_instrument,
)

REPO = Path(__file__).resolve().parents[2]
READY_DEADLINE_S = 15.0
#: Short enough to keep fault tests fast, long enough for a loaded CI machine.
TIMEOUT_S = 0.6


class Emulator:
    """One emulator server process and its VISA resource string."""

    def __init__(self, kind: str, channels: int) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.instruments.emulators.server",
                "--kind",
                kind,
                "--channels",
                str(channels),
                "--port",
                "0",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.port = self._wait_ready()
        self.resource = f"TCPIP0::127.0.0.1::{self.port}::SOCKET"

    def _wait_ready(self) -> int:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + READY_DEADLINE_S
        seen: list[str] = []
        while time.monotonic() < deadline:
            if not sel.select(timeout=deadline - time.monotonic()):
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("READY "):
                return int(line.split()[1])
        self.stop()
        stderr = self.proc.stderr.read() if self.proc.stderr else ""
        pytest.fail(f"emulator did not print READY within {READY_DEADLINE_S} s: {seen} {stderr}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 9)
        self.proc.wait(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def psu_server() -> Iterator[Emulator]:
    emulator = Emulator("power-supply", 3)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def att_server() -> Iterator[Emulator]:
    emulator = Emulator("optical-attenuator", 2)
    yield emulator
    emulator.stop()


@pytest.fixture
def psu(psu_server: Emulator, tmp_path: Path) -> Iterator[PowerSupply]:
    with PowerSupply(
        psu_server.resource,
        channels=3,
        name="psu0",
        expected_model=r"^NPABench,NPA-PSU\d+,",
        timeout_s=TIMEOUT_S,
        log_path=tmp_path / "psu0.log",
        lock_dir=tmp_path / "locks",
    ) as instrument:
        instrument.write("DIAG:FAUL:CLE")
        instrument.reset()
        instrument.clear()
        yield instrument
        instrument.write("DIAG:FAUL:CLE")


@pytest.fixture
def att(att_server: Emulator, tmp_path: Path) -> Iterator[OpticalAttenuator]:
    with OpticalAttenuator(
        att_server.resource,
        channels=2,
        name="voa0",
        timeout_s=TIMEOUT_S,
        lock_dir=tmp_path / "locks",
    ) as instrument:
        instrument.reset()
        yield instrument


# -- identity, common commands, log ------------------------------------------


def test_identity_and_common_commands(psu: PowerSupply) -> None:
    """Verify: *IDN? is parsed; *RST, *CLS, *OPC? work; the log holds commands and answers."""
    assert psu.identity is not None
    assert psu.identity.manufacturer == "NPABench"
    assert psu.identity.model == "NPA-PSU3"
    psu.set_voltage(1, 5)
    psu.reset()
    assert psu.voltage(1) == 0.0
    psu.write("DIAG:FAUL:ERR -100")
    psu.clear()
    assert psu.read_errors() == []
    psu.wait_complete()
    assert psu.log_path is not None
    log = psu.log_path.read_text()
    assert "> *IDN?" in log
    assert "< NPABench,NPA-PSU3," in log
    assert "> VOLT 5,(@1)" in log


def test_identity_mismatch_names_everything(psu_server: Emulator, tmp_path: Path) -> None:
    """Verify: a wrong model fails at open, naming instrument, resource, expected, seen."""
    inst = ScpiInstrument(
        psu_server.resource, name="psu-x", expected_model="E36313A", lock_dir=tmp_path
    )
    with pytest.raises(InstrumentIdentityError) as info:
        inst.open()
    message = str(info.value)
    for part in ("psu-x", psu_server.resource, "E36313A", "NPA-PSU3"):
        assert part in message
    # The failed open released the lock: a correct open now succeeds.
    with ScpiInstrument(psu_server.resource, expected_model="NPA-PSU", lock_dir=tmp_path) as ok:
        assert ok.query("*OPC?") == "1"


# -- power supply -------------------------------------------------------------


def test_power_supply_every_method(psu: PowerSupply) -> None:
    """Verify: every setter reads back; measurement follows output; OVP trips and clears."""
    psu.set_voltage(2, 12)
    assert psu.voltage(2) == pytest.approx(12)
    psu.set_current_limit(2, 0.5)
    assert psu.current_limit(2) == pytest.approx(0.5)
    assert psu.power_get(2) is False
    assert psu.measure_voltage(2) == pytest.approx(0)
    psu.power_set(2, True)
    assert psu.power_get(2) is True
    assert psu.measure_voltage(2) == pytest.approx(12)
    assert psu.measure_current(2) == pytest.approx(0.5)  # 12 V / 12 ohm capped by the limit
    psu.set_current_limit(2, 2)
    assert psu.measure_current(2) == pytest.approx(1.0)
    psu.power_set(2, False)
    assert psu.power_get(2) is False

    psu.set_ovp(3, 5)
    assert psu.ovp(3) == pytest.approx(5)
    assert psu.ovp_tripped(3) is False
    psu.power_set(3, True)
    psu.set_voltage(3, 6)
    assert psu.ovp_tripped(3) is True
    assert psu.power_get(3) is False
    psu.clear_ovp(3)
    assert psu.ovp_tripped(3) is False
    # Other channels untouched.
    assert psu.voltage(1) == pytest.approx(0)


def test_channel_checked_locally(psu: PowerSupply) -> None:
    """Verify: a channel outside 1..3 fails before anything is sent."""
    with pytest.raises(ChannelOutOfRange, match=r"channel 4 out of range.*1\.\.3"):
        psu.set_voltage(4, 1)
    with pytest.raises(ChannelOutOfRange):
        psu.power_get(0)
    assert psu.log_path is not None
    assert "(@4)" not in psu.log_path.read_text()


def test_malformed_command_raises_113(psu: PowerSupply) -> None:
    """Verify: an undefined header surfaces as InstrumentError -113 naming the command."""
    with pytest.raises(InstrumentError) as info, psu.commands():
        psu.write("VOLT 1,(@1)")
        psu.write("FROB:NICATE 3")
    assert -113 in info.value.codes
    assert "FROB:NICATE 3" in str(info.value)
    assert "psu0" in str(info.value)
    assert info.value.commands == ("VOLT 1,(@1)", "FROB:NICATE 3")
    # The queue was drained: the next group is clean.
    psu.set_voltage(1, 2)
    assert psu.voltage(1) == pytest.approx(2)


def test_out_of_range_raises_222(psu: PowerSupply) -> None:
    """Verify: a value past the instrument's range gives -222 and changes nothing."""
    psu.set_voltage(1, 3)
    with pytest.raises(InstrumentError, match="-222") as info:
        psu.set_voltage(1, 1000)
    assert info.value.codes == (-222,)
    assert psu.voltage(1) == pytest.approx(3)


def test_every_queued_error_is_reported(psu: PowerSupply) -> None:
    """Verify: several queued errors all appear, in order."""
    with pytest.raises(InstrumentError) as info, psu.commands():
        psu.write("DIAG:FAUL:ERR -350")
        psu.write("DIAG:FAUL:ERR -410")
    assert info.value.codes == (-350, -410)


# -- faults ---------------------------------------------------------------------


def test_hung_instrument_times_out_then_works(psu: PowerSupply) -> None:
    """Verify: a hung instrument gives InstrumentTimeout; the next query gets its own answer."""
    psu.set_voltage(1, 7)
    # The emulator hangs for everyone, then processes what it was sent meanwhile.
    psu.write(f"DIAG:FAUL:HANG {TIMEOUT_S * 1.5:.2f}")
    with pytest.raises(InstrumentTimeout) as info:
        psu.query("VOLT? (@1)")
    for part in ("psu0", psu.resource, "VOLT? (@1)"):
        assert part in str(info.value)
    assert psu.query("*IDN?").startswith("NPABench,NPA-PSU3")
    assert psu.voltage(1) == pytest.approx(7)


def test_dropped_connection_then_works(psu: PowerSupply) -> None:
    """Verify: a dropped connection gives InstrumentConnectionLost; the next call reconnects."""
    psu.set_voltage(2, 4)
    psu.write("DIAG:FAUL:DROP")
    with pytest.raises(InstrumentConnectionLost, match=r"psu0.*connection"):
        psu.voltage(2)
    assert psu.voltage(2) == pytest.approx(4)


def test_dropped_connection_detected_during_write(psu: PowerSupply) -> None:
    """Verify: a drop noticed when sending also gives InstrumentConnectionLost."""
    psu.write("DIAG:FAUL:DROP")
    time.sleep(0.2)
    with pytest.raises(InstrumentConnectionLost):
        psu.set_voltage(1, 1)
    psu.set_voltage(1, 1)
    assert psu.voltage(1) == pytest.approx(1)


def test_slow_answer_within_timeout(psu: PowerSupply) -> None:
    """Verify: an answer later than usual but within the timeout is fine."""
    psu.write(f"DIAG:FAUL:DEL {TIMEOUT_S / 3:.2f}")
    start = time.monotonic()
    assert psu.query("*IDN?").startswith("NPABench,")
    assert time.monotonic() - start >= TIMEOUT_S / 3 * 0.9


def test_late_reply_never_taken_for_next_answer(psu: PowerSupply) -> None:
    """Verify: after a timeout, the late reply is discarded and the next query gets its own."""
    psu.set_voltage(1, 9)
    psu.write(f"DIAG:FAUL:DEL {TIMEOUT_S * 1.5:.2f}")
    with pytest.raises(InstrumentTimeout, match=r"VOLT\? \(@1\)"):
        psu.query("VOLT? (@1)")
    psu.write("DIAG:FAUL:CLE")
    time.sleep(TIMEOUT_S)  # the late "9" has arrived by now (on the old session)
    assert psu.query("*IDN?").startswith("NPABench,NPA-PSU3")
    assert psu.query("OUTP? (@2)") == "0"
    assert psu.voltage(1) == pytest.approx(9)  # a command group: no stale -410 raised here
    assert [e.code for e in psu.stale_errors] == [-410]


def test_unsolicited_answer_is_not_taken_for_the_next(psu: PowerSupply) -> None:
    """Verify: an answer nobody read (a query sent with write()) is discarded, and logged."""
    psu.write("*IDN?")
    time.sleep(0.1)
    assert psu.query("OUTP? (@1)") == "0"
    assert psu.log_path is not None
    assert "discarded unsolicited" in psu.log_path.read_text()


def test_threads_take_turns(psu: PowerSupply) -> None:
    """Verify: two threads querying one driver each get their own answers."""
    psu.set_voltage(1, 1)
    psu.set_voltage(2, 2)
    seen: dict[int, set[float]] = {1: set(), 2: set()}

    def worker(channel: int) -> None:
        for _ in range(20):
            seen[channel].add(psu.voltage(channel))

    threads = [threading.Thread(target=worker, args=(ch,)) for ch in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert seen == {1: {1.0}, 2: {2.0}}


# -- one user at a time -------------------------------------------------------------

_HOLDER = """
import sys, time
from pathlib import Path
from bench.instruments import ScpiInstrument
inst = ScpiInstrument(sys.argv[1], name="holder", lock_dir=Path(sys.argv[2])).open()
print("HOLDING", flush=True)
sys.stdin.read()
"""


def test_second_process_is_refused_naming_holder(psu_server: Emulator, tmp_path: Path) -> None:
    """Verify: while another process holds the instrument, open fails naming its PID."""
    locks = tmp_path / "locks"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, psu_server.resource, str(locks)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "HOLDING"
        inst = ScpiInstrument(psu_server.resource, name="psu0", lock_dir=locks, lock_wait_s=0.3)
        start = time.monotonic()
        with pytest.raises(InstrumentBusy) as info:
            inst.open()
        assert time.monotonic() - start >= 0.3
        assert f"pid {holder.pid}" in str(info.value)
        assert "psu0" in str(info.value)
    finally:
        os.kill(holder.pid, 9)
        holder.wait(timeout=5)
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()
    with ScpiInstrument(psu_server.resource, lock_dir=locks) as inst:
        assert inst.query("*OPC?") == "1"


def test_same_process_second_driver_is_refused(psu: PowerSupply, tmp_path: Path) -> None:
    """Verify: a second driver object on a held resource is refused too."""
    other = PowerSupply(psu.resource, channels=3, lock_dir=tmp_path / "locks", lock_wait_s=0.1)
    with pytest.raises(InstrumentBusy, match=f"pid {os.getpid()}"):
        other.open()


# -- optical attenuator ----------------------------------------------------------------


def test_attenuator_every_method(att: OpticalAttenuator) -> None:
    """Verify: attenuation, wavelength and shutter set and read back, per channel."""
    att.set_attenuation(2, 12.5)
    assert att.attenuation(2) == pytest.approx(12.5)
    att.set_wavelength(2, 1310)
    assert att.wavelength(2) == pytest.approx(1310)
    att.set_wavelength(1, 1550)
    assert att.wavelength(1) == pytest.approx(1550)
    att.set_shutter(2, open=False)
    assert att.shutter_open(2) is False
    att.set_shutter(2, open=True)
    assert att.shutter_open(2) is True
    with pytest.raises(InstrumentError) as info:
        att.set_attenuation(1, 1e6)
    assert -222 in info.value.codes
    with pytest.raises(ChannelOutOfRange):
        att.attenuation(3)


# -- registry -------------------------------------------------------------------------------


def test_registry_by_kind(psu_server: Emulator, tmp_path: Path) -> None:
    """Verify: kinds map to drivers; open_instrument opens and checks the model."""
    assert driver_for("power-supply") is PowerSupply
    assert driver_for("optical-attenuator") is OpticalAttenuator
    assert {"power-supply", "optical-attenuator"} <= set(kinds())
    with pytest.raises(UsageError, match="power-supply"):
        driver_for("oscilloscope")
    inst = open_instrument(
        "power-supply",
        psu_server.resource,
        3,
        expected_model="NPA-PSU",
        log_path=tmp_path / "reg.log",
        lock_dir=tmp_path / "locks",
    )
    try:
        assert isinstance(inst, PowerSupply)
        assert inst.channels == 3
        assert inst.power_get(1) in {True, False}
    finally:
        inst.close()
    assert "> OUTP? (@1)" in (tmp_path / "reg.log").read_text()
