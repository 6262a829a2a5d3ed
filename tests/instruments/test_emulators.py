"""The SCPI instrument emulators, through pyvisa (pyvisa-py) over real TCP sockets.

Servers run as subprocesses (``python -m bench.instruments.emulators.server``);
the parser's own unit tests call it directly.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvisa
from pyvisa.errors import VisaIOError

from bench.instruments.emulators.attenuator import OpticalAttenuator
from bench.instruments.emulators.power_supply import PowerSupply
from bench.instruments.emulators.scpi import (
    ErrorQueue,
    SCPIError,
    format_float3,
    parse_bool,
    parse_channel_list,
    parse_number,
    split_params,
    split_units,
)
from bench.instruments.emulators.server import EmulatorThread, command_fields

REPO = Path(__file__).resolve().parents[2]
READY_DEADLINE = 15.0


class Emulator:
    """A server subprocess; stopped by its PID."""

    def __init__(self, *args: str, stderr_path: Path | None = None) -> None:
        self._stderr = stderr_path.open("wb") if stderr_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.instruments.emulators.server", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.proc.stdout
        assert stdout is not None
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=READY_DEADLINE)
        except queue.Empty:
            self.stop()
            raise AssertionError("emulator did not print READY in time") from None
        if not line.startswith("READY "):
            self.stop()
            raise AssertionError(f"emulator said {line!r} instead of READY")
        self.port = int(line.split()[1])
        self.resource = f"TCPIP0::127.0.0.1::{self.port}::SOCKET"

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if hasattr(self._stderr, "close"):
            self._stderr.close()
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def rm() -> Iterator[pyvisa.ResourceManager]:
    manager = pyvisa.ResourceManager("@py")
    yield manager
    manager.close()


Opener = Callable[..., Any]


def _opener(rm: pyvisa.ResourceManager, resource: str) -> tuple[Opener, list[Any]]:
    opened: list[Any] = []

    def open_(timeout: int = 2000) -> Any:
        inst = rm.open_resource(
            resource, read_termination="\n", write_termination="\n", timeout=timeout
        )
        opened.append(inst)
        return inst

    return open_, opened


def _close_all(opened: list[Any]) -> None:
    for inst in opened:
        with contextlib.suppress(Exception):  # already closed by a dropped connection
            inst.close()


@pytest.fixture(scope="module")
def psu_server() -> Iterator[Emulator]:
    emu = Emulator("--kind", "power-supply", "--channels", "3", "--serial", "PSU42")
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def att_server() -> Iterator[Emulator]:
    emu = Emulator("--kind", "optical-attenuator", "--channels", "4", "--serial", "ATT7")
    yield emu
    emu.stop()


@pytest.fixture
def psu(rm: pyvisa.ResourceManager, psu_server: Emulator) -> Iterator[Any]:
    open_, opened = _opener(rm, psu_server.resource)
    inst = open_()
    inst.write("DIAG:FAUL:CLE;*RST;*CLS")
    yield inst
    _close_all(opened)


@pytest.fixture
def att(rm: pyvisa.ResourceManager, att_server: Emulator) -> Iterator[Any]:
    open_, opened = _opener(rm, att_server.resource)
    inst = open_()
    inst.write("DIAG:FAUL:CLE;*RST;*CLS")
    yield inst
    _close_all(opened)


def errors(inst: Any) -> list[int]:
    """Drain the error queue: the codes, oldest first."""
    codes: list[int] = []
    for _ in range(20):
        code = int(inst.query("SYST:ERR?").split(",")[0])
        if code == 0:
            return codes
        codes.append(code)
    raise AssertionError("error queue never emptied")


def wait_for(predicate: Callable[[], bool], deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


# ---------------------------------------------------------------------------
# Parser units


def test_split_units_and_params() -> None:
    assert split_units("VOLT 1,(@1,2);:OUTP ON") == ["VOLT 1,(@1,2)", ":OUTP ON"]
    assert split_params("12, (@1:3)") == ["12", "(@1:3)"]
    assert split_params("") == []
    for bad in ("1,,2", "1,"):
        with pytest.raises(SCPIError) as exc:
            split_params(bad)
        assert exc.value.code == -102
    with pytest.raises(SCPIError):
        split_units("VOLT 1,(@1")


def test_parse_number_units_and_limits() -> None:
    kw: dict[str, Any] = {"lo": 0.0, "hi": 30.0, "default": 0.0, "units": {"V": 1.0, "MV": 1e-3}}
    assert parse_number("12V", **kw) == 12.0
    assert parse_number("1500mV", **kw) == 1.5
    assert parse_number("  +1.2e1 ", **kw) == 12.0
    assert parse_number("max", **kw) == 30.0
    assert parse_number("MINimum", **kw) == 0.0
    assert parse_number("DEFAULT", **kw) == 0.0
    for text, code in (("31", -222), ("-1", -222), ("abc", -224), ("12W", -224)):
        with pytest.raises(SCPIError) as exc:
            parse_number(text, **kw)
        assert exc.value.code == code
    nm = {"NM": 1e-9, "M": 1.0}
    assert parse_number("1640NM", lo=1260e-9, hi=1640e-9, default=1550e-9, units=nm) == 1640e-9


def test_parse_bool_channel_list_and_format() -> None:
    assert parse_bool("on") is True
    assert parse_bool("0") is False
    with pytest.raises(SCPIError) as exc:
        parse_bool("yes")
    assert exc.value.code == -224
    assert parse_channel_list("(@1)", 3) == [1]
    assert parse_channel_list("(@1,3)", 3) == [1, 3]
    assert parse_channel_list("(@1:3)", 3) == [1, 2, 3]
    assert parse_channel_list("(@3:2,1)", 3) == [3, 2, 1]
    with pytest.raises(SCPIError) as exc:
        parse_channel_list("(@4)", 3)
    assert exc.value.code == -222
    with pytest.raises(SCPIError) as exc:
        parse_channel_list("(@a)", 3)
    assert exc.value.code == -102
    assert format_float3(1.55e-6) == "+1.55000000E-006"
    assert format_float3(10.0) == "+1.00000000E+001"


def test_error_queue_overflow_unit() -> None:
    q = ErrorQueue()
    for _ in range(12):
        q.push(-113)
    entries = list(q)
    assert len(entries) == 10
    assert entries[-1] == (-350, "Queue overflow")
    assert entries[0] == (-113, "Undefined header")
    assert q.pop() == (-113, "Undefined header")


def test_dispatch_directly_and_on_change_callback() -> None:
    seen: list[tuple[int, dict[str, Any]]] = []
    psu = PowerSupply(2, on_change=lambda ch, st: seen.append((ch, st)))
    assert psu.execute("volt 5,(@2);OUTP:STAT ON,(@2);meas:volt? (@1:2)") == (
        "+0.00000000E+00,+5.00000000E+00"
    )
    assert seen == [(2, {"powered": True, "voltage": 5.0})]
    att = OpticalAttenuator(2, on_change=lambda ch, st: seen.append((ch, st)))
    att.set_threshold(1, 5.0)
    att.execute("INP1:ATT 6")
    assert seen[-1] == (1, {"light": False, "attenuation_db": 6.0, "shutter_open": True})


def test_command_fields() -> None:
    f = command_fields(2, {"light": False, "attenuation_db": 35.0, "shutter_open": True})
    assert f == {
        "channel": "2",
        "light": "0",
        "attenuation_db": "35",
        "shutter_open": "1",
        "link_state": "down",
        "power": "off",
    }
    assert command_fields(1, {"powered": True, "voltage": 12.5})["link_state"] == "up"


def test_threaded_helper(rm: pyvisa.ResourceManager) -> None:
    with EmulatorThread(PowerSupply(1)) as emu:
        inst: Any = rm.open_resource(
            f"TCPIP0::127.0.0.1::{emu.port}::SOCKET",
            read_termination="\n",
            write_termination="\n",
            timeout=2000,
        )
        try:
            assert inst.query("*IDN?") == "NPABench,NPA-PSU1,0001,1.0"
            assert inst.query("VOLT 3.3;*OPC?") == "1"
            assert emu.model.execute("VOLT?") == "+3.30000000E+00"
        finally:
            inst.close()


# ---------------------------------------------------------------------------
# Common commands, syntax and errors (over pyvisa)


def test_common_commands(psu: Any) -> None:
    assert psu.query("*IDN?") == "NPABench,NPA-PSU3,PSU42,1.0"
    assert psu.query("*OPC?") == "1"
    psu.write("*WAI")
    assert psu.query("*ESR?") == "0"
    assert psu.query("*STB?") == "0"
    psu.write("BOGUS")
    assert psu.query("*STB?") == "4"  # error queue not empty
    assert int(psu.query("*ESR?")) & 32  # command error
    assert psu.query("*ESR?") == "0"  # read clears
    psu.write("*CLS")
    assert psu.query("SYST:ERR?") == '0,"No error"'
    assert psu.query("SYST:ERR:COUN?") == "0"


def test_short_long_case_forms_and_chaining(psu: Any) -> None:
    psu.write("VOLT 1,(@1)")
    psu.write("voltage 2,(@2)")
    psu.write("VoLtAgE:LeVeL:iMmEdIaTe:AmPlItUdE 3V,(@3)")
    assert psu.query("VOLT? (@1:3)") == "+1.00000000E+00,+2.00000000E+00,+3.00000000E+00"
    assert psu.query("volt? (@1);:CURR? (@1);*OPC?") == "+1.00000000E+00;+1.00000000E+00;1"
    psu.write("OUTP:STAT ON,(@1);OUTPUT OFF,(@1);outp on,(@2)")
    assert psu.query("OUTPut:STATe? (@1,2)") == "0,1"
    assert psu.query("VOLT?") == "+1.00000000E+00"  # no channel list: channel 1
    assert errors(psu) == []


def test_min_max_def(psu: Any) -> None:
    psu.write("VOLT MAX,(@1);CURR MIN,(@1);VOLT:PROT DEF,(@1)")
    assert psu.query("VOLT? (@1);CURR? (@1);VOLT:PROT? (@1)") == (
        "+3.00000000E+01;+0.00000000E+00;+3.20000000E+01"
    )
    psu.write("VOLT DEF,(@1);CURR DEFault,(@1)")
    assert psu.query("VOLT? (@1);CURR? (@1)") == "+0.00000000E+00;+1.00000000E+00"
    assert psu.query("VOLT? MAX,(@1)") == "+3.00000000E+01"
    assert psu.query("CURR? MAXIMUM") == "+5.00000000E+00"
    assert errors(psu) == []


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ("*RST?", -100),  # a set-only command queried
        ("MEAS:VOLT 1", -100),  # a query-only command set
        ("VOLT 1,,(@1)", -102),
        ("VOLT$ 1", -102),
        ("*IDN? 1", -108),
        ("OUTP ON,OFF,(@1)", -108),
        ("VOLT", -109),
        ("OUTP", -109),
        ("VOLTS 1", -113),
        ("BOGUS:NODE?", -113),
        ("VOLT 1,(@4)", -222),
        ("VOLT 31", -222),
        ("CURR 5.1A", -222),
        ("OUTP MAYBE", -224),
        ("VOLT 12W", -224),
        ("VOLT? SOME,(@1)", -224),
    ],
)
def test_psu_errors(psu: Any, command: str, code: int) -> None:
    psu.write(command)
    assert errors(psu) == [code]
    assert psu.query("*OPC?") == "1"  # still usable


def test_error_text_and_queue_overflow(psu: Any) -> None:
    psu.write("NOPE")
    assert psu.query("SYST:ERR?") == '-113,"Undefined header"'
    psu.write(";".join(["NOPE"] * 12))
    assert errors(psu) == [-113] * 9 + [-350]
    psu.write("DIAG:FAUL:ERR -350")
    assert psu.query("SYST:ERR?") == '-350,"Queue overflow"'


# ---------------------------------------------------------------------------
# Power supply model


def test_psu_load_model(psu: Any) -> None:
    psu.write("VOLT 12,(@1:2);CURR 0.5,(@2);OUTP ON,(@1:2)")
    assert psu.query("MEAS:VOLT? (@1,2,3)") == "+1.20000000E+01,+1.20000000E+01,+0.00000000E+00"
    # 12 V on 12 ohm: 1 A on channel 1; channel 2 is limited to 0.5 A.
    assert psu.query("MEAS:CURR? (@1:3)") == "+1.00000000E+00,+5.00000000E-01,+0.00000000E+00"
    psu.write("DIAG:LOAD 24,(@1)")
    assert psu.query("MEASure:SCALar:CURRent:DC? (@1)") == "+5.00000000E-01"
    assert psu.query("DIAG:LOAD? (@1)") == "+2.40000000E+01"
    psu.write("OUTP OFF,(@1)")
    assert psu.query("MEAS:VOLT? (@1);MEAS:CURR? (@1)") == "+0.00000000E+00;+0.00000000E+00"
    assert errors(psu) == []


def test_psu_over_voltage_protection(psu: Any) -> None:
    psu.write("VOLT:PROT 10,(@1);VOLT 5,(@1);OUTP ON,(@1)")
    assert psu.query("VOLT:PROT? (@1);VOLT:PROT:TRIP? (@1)") == "+1.00000000E+01;0"
    psu.write("VOLT 11,(@1)")
    assert psu.query("VOLT:PROT:TRIP? (@1:2)") == "1,0"
    assert psu.query("OUTP? (@1);MEAS:VOLT? (@1)") == "0;+0.00000000E+00"
    psu.write("OUTP ON,(@1)")
    assert errors(psu) == [-221]  # cannot turn on while tripped
    psu.write("VOLT 5,(@1);VOLT:PROT:CLE (@1)")
    assert psu.query("VOLT:PROT:TRIP? (@1);OUTP? (@1)") == "0;0"
    psu.write("OUTP ON,(@1)")
    assert psu.query("MEAS:VOLT? (@1)") == "+5.00000000E+00"
    # Lowering the protection level below the set voltage trips too.
    psu.write("VOLT:PROT 4,(@1)")
    assert psu.query("VOLT:PROT:TRIP? (@1)") == "1"
    assert errors(psu) == []


# ---------------------------------------------------------------------------
# Attenuator model


def test_attenuator_commands(att: Any) -> None:
    assert att.query("*IDN?") == "NPABench,NPA-ATT4,ATT7,1.0"
    att.write(":INP2:ATT 10DB")
    assert att.query(":INPut2:ATTenuation?") == "+1.00000000E+001"
    assert att.query("inp2:att? max;INP2:ATT? MIN;:INP2:ATT? DEF") == (
        "+6.00000000E+001;+0.00000000E+000;+0.00000000E+000"
    )
    att.write("INP2:ATT MAX")
    assert att.query("INP2:ATT?") == "+6.00000000E+001"
    att.write(":INP1:WAV 1310NM")
    assert att.query(":INP1:WAV?") == "+1.31000000E-006"
    att.write(":INPUT1:WAVELENGTH 1.55E-6")
    assert att.query("inp:wav?") == "+1.55000000E-006"  # no suffix: channel 1
    assert att.query(":OUTP3:STAT?") == "1"  # shutters open after *RST
    att.write(":OUTP3:STAT OFF;:OUTP4 0")
    assert att.query(":OUTP3?;:OUTPut4:STATe?") == "0;0"
    assert errors(att) == []


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (":INP5:ATT 1", -114),
        (":INP1:ATT 61", -222),
        (":INP1:WAV 1700NM", -222),
        (":INP1:WAV 1550", -222),  # meters
        (":INP1:ATT 3DBM", -224),
        (":OUTP1 HALF", -224),
        (":INP1:ATT", -109),
        (":OUTP1? 1", -108),
    ],
)
def test_attenuator_errors(att: Any, command: str, code: int) -> None:
    att.write(command)
    assert errors(att) == [code]


def test_attenuator_threshold(att: Any) -> None:
    assert att.query(":DIAG:THR1?") == "+3.00000000E+001"
    att.write(":INP1:ATT 30;:INP2:ATT 30.5")
    assert att.query(":DIAG:LIGH1?;:DIAG:LIGH2?;:DIAG:LIGHT3?") == "1;0;1"
    att.write(":DIAG:THR3 5;:INP3:ATT 6")
    assert att.query(":DIAG:THR3?;:DIAG:LIGH3?") == "+5.00000000E+000;0"
    att.write(":INP3:ATT 5")
    assert att.query(":DIAG:LIGH3?") == "1"
    att.write(":OUTP3 OFF")
    assert att.query(":DIAG:LIGH3?") == "0"
    att.write("*RST")  # keeps the threshold, reopens the shutter
    assert att.query(":DIAG:THR3?;:OUTP3?") == "+5.00000000E+000;1"
    assert errors(att) == []


# ---------------------------------------------------------------------------
# Faults


def test_fault_hang_then_recovery(rm: pyvisa.ResourceManager, psu_server: Emulator) -> None:
    open_, opened = _opener(rm, psu_server.resource)
    try:
        inst, other = open_(timeout=400), open_(timeout=400)
        inst.write("DIAG:FAUL:HANG 1.2")
        with pytest.raises(VisaIOError) as exc:
            inst.query("*IDN?")
        assert exc.value.error_code == pyvisa.constants.StatusCode.error_timeout
        with pytest.raises(VisaIOError):  # every client is affected
            other.query("*OPC?")
        inst.timeout = other.timeout = 3000
        assert inst.read() == "NPABench,NPA-PSU3,PSU42,1.0"  # the late answer
        assert other.read() == "1"
        assert inst.query("*OPC?") == "1"
    finally:
        _close_all(opened)


def test_fault_drop(rm: pyvisa.ResourceManager, psu_server: Emulator) -> None:
    open_, opened = _opener(rm, psu_server.resource)
    try:
        inst = open_(timeout=1000)
        assert inst.query("*OPC?") == "1"
        inst.write("DIAG:FAUL:DROP")
        with pytest.raises(VisaIOError):
            inst.query("*IDN?")
        fresh = open_()
        assert fresh.query("*IDN?").startswith("NPABench,NPA-PSU3")
    finally:
        _close_all(opened)


def test_fault_delay(psu: Any) -> None:
    psu.write("DIAG:FAUL:DEL 0.6")
    assert psu.query("DIAG:FAUL:DEL?") == "+6.00000000E-01"
    start = time.monotonic()
    assert psu.query("*OPC?") == "1"
    assert time.monotonic() - start >= 0.55
    # A command sent before the late answer interrupts the query.
    psu.write("*IDN?")
    psu.write("DIAG:FAUL:CLE")
    start = time.monotonic()
    assert psu.query("SYST:ERR?") == '-410,"Query INTERRUPTED"'
    assert time.monotonic() - start < 0.5
    assert errors(psu) == []


def test_fault_error(psu: Any) -> None:
    psu.write("DIAG:FAUL:ERR -222;DIAGnostic:FAULt:ERRor 101")
    assert psu.query("SYST:ERR?") == '-222,"Data out of range"'
    assert psu.query("SYST:ERR?") == '101,"Device-specific error"'
    psu.write("DIAG:FAUL:ERR zero")
    assert errors(psu) == [-224]


# ---------------------------------------------------------------------------
# CLI: on-change command, signals


def test_on_change_command(rm: pyvisa.ResourceManager, tmp_path: Path) -> None:
    out = tmp_path / "changes.txt"
    emu = Emulator(
        "--kind",
        "optical-attenuator",
        "--channels",
        "2",
        "--on-change-cmd",
        f"echo {{channel}} {{link_state}} {{attenuation_db}} {{shutter_open}} >> {out}",
        stderr_path=tmp_path / "stderr.txt",
    )
    open_, opened = _opener(rm, emu.resource)
    try:
        inst = open_()
        inst.write(":OUTP2 OFF")
        inst.write(":OUTP2 ON")
        inst.write(":INP1:ATT 35")
        inst.write(":INP1:ATT 36")  # no change of link state, but a change of state
        inst.write(":DIAG:THR1 40")
        expected = ["2 down 0 0", "2 up 0 1", "1 down 35 1", "1 down 36 1", "1 up 36 1"]
        wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= len(expected))
        assert out.read_text().splitlines() == expected
    finally:
        _close_all(opened)
        assert emu.stop() == 0
    assert "on-change" in (tmp_path / "stderr.txt").read_text()


def test_psu_on_change_command_and_sigint(rm: pyvisa.ResourceManager, tmp_path: Path) -> None:
    out = tmp_path / "power.txt"
    emu = Emulator(
        "--kind",
        "power-supply",
        "--channels",
        "2",
        "--on-change-cmd",
        f"echo {{channel}} {{power}} {{voltage}} >> {out}",
    )
    open_, opened = _opener(rm, emu.resource)
    try:
        inst = open_()
        inst.write("VOLT 12,(@2);OUTP ON,(@2)")
        inst.write("OUTP OFF,(@2)")
        wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 2)
        assert out.read_text().splitlines() == ["2 on 12", "2 off 0"]
    finally:
        _close_all(opened)
    os.kill(emu.proc.pid, signal.SIGINT)
    assert emu.proc.wait(timeout=5) == 0
    emu.stop()


def test_cli_rejects_bad_arguments() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.instruments.emulators.server", "--kind", "toaster"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
