"""A small SCPI command parser and dispatcher shared by the instrument emulators.

Syntax accepted (a subset of SCPI-1999 / IEEE 488.2, kept simple on purpose):

* one message per line, terminated by ``\\n`` (``\\r\\n`` accepted);
* ``;`` chains several commands on one line; every ``;``-separated unit is a
  full command with its own path (a leading ``:`` is optional and ignored);
* headers are case-insensitive, in short or long form (``VOLT``/``VOLTAGE``),
  optional nodes may be left out (``OUTP`` = ``OUTP:STAT``), numeric suffixes
  select a channel (``INP2:ATT``, default 1);
* a header ending in ``?`` is a query; the answers of several queries on one
  line are joined with ``;`` as IEEE 488.2 says;
* a unit that fails pushes its error and produces no answer; the rest of the
  line is still executed.

Error codes: see :data:`ERROR_TEXT`.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: The standard (negative) codes the emulators push, with their SCPI text.
ERROR_TEXT: dict[int, str] = {
    0: "No error",
    -100: "Command error",
    -102: "Syntax error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -114: "Header suffix out of range",
    -221: "Settings conflict",
    -222: "Data out of range",
    -224: "Illegal parameter value",
    -350: "Queue overflow",
    -410: "Query INTERRUPTED",
}

ERROR_QUEUE_SIZE = 10

# IEEE 488.2 Standard Event Status Register bits.
ESR_OPC = 1
ESR_QYE = 4
ESR_DDE = 8
ESR_EXE = 16
ESR_CME = 32
# Status Byte bits.
STB_EAV = 4
STB_ESB = 32

StateValue = bool | float
State = dict[str, StateValue]
#: ``on_change(channel, state)``: called whenever a channel's effective state changes.
StateCallback = Callable[[int, State], None]


class SCPIError(Exception):
    """A command failed: ``code`` is what goes into the error queue."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code},{error_text(code)}" + (f" ({detail})" if detail else ""))


def error_text(code: int) -> str:
    if code in ERROR_TEXT:
        return ERROR_TEXT[code]
    return "Device-specific error" if code > 0 else "Error"


class ErrorQueue:
    """The SCPI error queue: FIFO of ``size`` entries; on overflow the newest entry becomes -350."""

    def __init__(self, size: int = ERROR_QUEUE_SIZE) -> None:
        self.size = size
        self._entries: deque[tuple[int, str]] = deque()

    def push(self, code: int) -> None:
        if len(self._entries) >= self.size:
            self._entries[-1] = (-350, error_text(-350))
        else:
            self._entries.append((code, error_text(code)))

    def pop(self) -> tuple[int, str]:
        return self._entries.popleft() if self._entries else (0, error_text(0))

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(list(self._entries))


# ---------------------------------------------------------------------------
# Parameter helpers


_NUMBER = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)$")
_LIMITS = {"MIN": "min", "MINIMUM": "min", "MAX": "max", "MAXIMUM": "max"}
_LIMITS |= {"DEF": "def", "DEFAULT": "def"}


def limit_keyword(text: str) -> str | None:
    """``"min"``, ``"max"`` or ``"def"`` when ``text`` is one of MIN|MAX|DEF (any form)."""
    return _LIMITS.get(text.strip().upper())


def parse_number(
    text: str,
    *,
    lo: float,
    hi: float,
    default: float,
    units: dict[str, float] | None = None,
) -> float:
    """A numeric parameter: a number, optionally with a unit from ``units``, or MIN|MAX|DEF.

    Raises -224 for text that is not a number or has an unknown unit, -222 out of [lo, hi].
    """
    keyword = limit_keyword(text)
    if keyword is not None:
        return {"min": lo, "max": hi, "def": default}[keyword]
    m = _NUMBER.match(text.strip())
    if m is None:
        raise SCPIError(-224, f"not a number: {text!r}")
    value = float(m[1])
    unit = m[2].upper()
    if unit:
        scale = (units or {}).get(unit)
        if scale is None:
            raise SCPIError(-224, f"unknown unit {m[2]!r}")
        value *= scale
    # Tolerate float noise from unit scaling (1640NM = 1.6400000000000002e-06).
    tolerance = 1e-9 * max(abs(lo), abs(hi), 1e-300)
    if value < lo - tolerance or value > hi + tolerance:
        raise SCPIError(-222, f"{value} not in [{lo}, {hi}]")
    return min(max(value, lo), hi)


def parse_bool(text: str) -> bool:
    word = text.strip().upper()
    if word in ("ON", "1"):
        return True
    if word in ("OFF", "0"):
        return False
    raise SCPIError(-224, f"not a boolean: {text!r}")


_CHANNEL_LIST = re.compile(r"^\(\s*@(.*)\)$", re.S)


def is_channel_list(text: str) -> bool:
    return text.strip().startswith("(")


def parse_channel_list(text: str, channels: int) -> list[int]:
    """``(@1)``, ``(@1,2)``, ``(@1:3)``, ``(@1,3:4)`` -> channel numbers (1-based)."""
    m = _CHANNEL_LIST.match(text.strip())
    if m is None:
        raise SCPIError(-102, f"bad channel list {text!r}")
    result: list[int] = []
    for item in m[1].split(","):
        bounds = item.strip().split(":")
        if len(bounds) > 2 or not all(b.strip().isdigit() for b in bounds):
            raise SCPIError(-102, f"bad channel list {text!r}")
        first, last = int(bounds[0]), int(bounds[-1])
        step = 1 if last >= first else -1
        for ch in range(first, last + step, step):
            if not 1 <= ch <= channels:
                raise SCPIError(-222, f"channel {ch} not in 1..{channels}")
            result.append(ch)
    return result


def format_float(value: float) -> str:
    """IEEE 488.2 NR3 as Keysight power supplies answer: ``+1.20000000E+01``."""
    return f"{value:+.8E}"


def format_float3(value: float) -> str:
    """NR3 with a three-digit exponent, as 8163-style modules answer: ``+1.55000000E-006``."""
    mantissa, exponent = f"{value:+.8E}".split("E")
    return f"{mantissa}E{int(exponent):+04d}"


def format_bool(value: bool) -> str:
    return "1" if value else "0"


# ---------------------------------------------------------------------------
# Headers and dispatch


@dataclass(frozen=True)
class _Node:
    short: str
    long: str
    numeric: bool
    optional: bool


_PATTERN_NODE = re.compile(r"(\[)?:?([A-Za-z]+)(#)?(\])?")
_HEADER = re.compile(r"^(?:\*[A-Za-z]+\??|:?[A-Za-z]+\d*(?::[A-Za-z]+\d*)*\??)$")
_TOKEN = re.compile(r"^([A-Za-z]+)(\d*)$")


def _compile(pattern: str) -> tuple[_Node, ...]:
    nodes: list[_Node] = []
    pos = 0
    text = pattern.lstrip(":")
    while pos < len(text):
        m = _PATTERN_NODE.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"bad SCPI pattern {pattern!r} at {pos}")
        word = m[2]
        short = "".join(c for c in word if c.isupper()) or word.upper()
        nodes.append(_Node(short, word.upper(), bool(m[3]), bool(m[1])))
        pos = m.end()
    return tuple(nodes)


def _match(
    nodes: tuple[_Node, ...], tokens: list[tuple[str, str]], i: int = 0, j: int = 0
) -> list[int] | None:
    """Suffixes of the numeric nodes when ``tokens`` match ``nodes``, else None."""
    if i == len(nodes):
        return [] if j == len(tokens) else None
    node = nodes[i]
    if j < len(tokens):
        word, digits = tokens[j]
        if word in (node.short, node.long) and (node.numeric or not digits):
            rest = _match(nodes, tokens, i + 1, j + 1)
            if rest is not None:
                return ([int(digits) if digits else 1] if node.numeric else []) + rest
    if node.optional:
        rest = _match(nodes, tokens, i + 1, j)
        if rest is not None:
            return ([1] if node.numeric else []) + rest
    return None


@dataclass
class Session:
    """Per-connection state the server looks at after each line."""

    drop: bool = False  # close the connection after this line
    hang: float = 0.0  # stop answering anything for this many seconds


@dataclass
class Call:
    """One parsed command unit, handed to a handler."""

    header: str
    query: bool
    suffixes: list[int]
    params: list[str]
    session: Session

    @property
    def suffix(self) -> int:
        return self.suffixes[0] if self.suffixes else 1

    def expect(self, least: int, most: int | None = None) -> list[str]:
        """The parameters, checked: -109 when fewer than ``least``, -108 when more than ``most``."""
        most = least if most is None else most
        if len(self.params) < least:
            raise SCPIError(-109, self.header)
        if len(self.params) > most:
            raise SCPIError(-108, self.header)
        return self.params


Handler = Callable[[Call], str | None]


@dataclass
class _Command:
    pattern: str
    nodes: tuple[_Node, ...]
    setter: Handler | None
    query: Handler | None


def split_units(line: str) -> list[str]:
    """Split a message at ``;`` outside quotes and parentheses."""
    return _split(line, ";")


def split_params(text: str) -> list[str]:
    """Split parameters at ``,`` outside quotes and parentheses; -102 on an empty one."""
    if not text.strip():
        return []
    parts = [p.strip() for p in _split(text, ",")]
    if any(not p for p in parts):
        raise SCPIError(-102, f"empty parameter in {text!r}")
    return parts


def _split(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    for k, c in enumerate(text):
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise SCPIError(-102, "unbalanced parentheses")
        elif c == sep and depth == 0:
            parts.append(text[start:k])
            start = k + 1
    if quote or depth:
        raise SCPIError(-102, "unterminated string or parenthesis")
    parts.append(text[start:])
    return parts


@dataclass
class FaultState:
    """Faults injected with DIAGnostic:FAULt (instrument-wide)."""

    delay: float = 0.0  # answer every query this many seconds late


@dataclass
class _Status:
    esr: int = 0
    ese: int = 0
    sre: int = 0


class SCPIInstrument:
    """Base of the emulated instruments: dispatch, error queue, common commands, faults.

    Subclasses register their commands with :meth:`add` and describe each channel's
    effective state with :meth:`channel_state`; :attr:`on_change` is then called
    with ``(channel, state)`` whenever that state changes.
    """

    model = "NPA-INSTRUMENT"
    manufacturer = "NPABench"
    firmware = "1.0"

    def __init__(
        self, channels: int, serial: str = "0001", on_change: StateCallback | None = None
    ) -> None:
        if channels < 1:
            raise ValueError("an instrument has at least one channel")
        self.channels = channels
        self.serial = serial
        self.on_change = on_change
        self.errors = ErrorQueue()
        self.faults = FaultState()
        self._status = _Status()
        self._commands: list[_Command] = []
        self._common: dict[str, _Command] = {}
        self._published: dict[int, State] = {}
        self._register_base()

    # -- public API -------------------------------------------------------

    @property
    def idn(self) -> str:
        return f"{self.manufacturer},{self.model}{self.channels},{self.serial},{self.firmware}"

    def channel_state(self, channel: int) -> State:  # pragma: no cover - overridden
        return {}

    def states(self) -> dict[int, State]:
        return {ch: self.channel_state(ch) for ch in range(1, self.channels + 1)}

    def reset(self) -> None:
        """``*RST``: subclasses restore their channels; faults are not touched."""

    def push_error(self, code: int) -> None:
        self.errors.push(code)
        if -199 <= code <= -100:
            self._status.esr |= ESR_CME
        elif -299 <= code <= -200:
            self._status.esr |= ESR_EXE
        elif -399 <= code <= -300 or code > 0:
            self._status.esr |= ESR_DDE
        elif -499 <= code <= -400:
            self._status.esr |= ESR_QYE

    def add(
        self, pattern: str, setter: Handler | None = None, query: Handler | None = None
    ) -> None:
        """Register a command: ``pattern`` in SCPI notation (``OUTPut#[:STATe]``, # = suffix)."""
        if pattern.startswith("*"):
            self._common[pattern.upper()] = _Command(pattern, (), setter, query)
        else:
            self._commands.append(_Command(pattern, _compile(pattern), setter, query))

    def execute(self, line: str, session: Session | None = None) -> str | None:
        """Run one message (one line); the answer to its queries, or None when there is none."""
        session = session if session is not None else Session()
        answers: list[str] = []
        try:
            units = split_units(line.rstrip("\r\n"))
        except SCPIError as exc:
            self.push_error(exc.code)
            return None
        for unit in units:
            if not unit.strip():
                continue
            try:
                answer = self._execute_unit(unit.strip(), session)
            except SCPIError as exc:
                log.debug("%s: %r -> %s", self.model, unit, exc)
                self.push_error(exc.code)
                answer = None
            finally:
                self.publish()
            if answer is not None:
                answers.append(answer)
        return ";".join(answers) if answers else None

    def settle(self) -> None:
        """Take the current states as published, without calling :attr:`on_change`."""
        self._published = {ch: dict(state) for ch, state in self.states().items()}

    def publish(self) -> None:
        """Call :attr:`on_change` for each channel whose effective state changed."""
        for ch, state in self.states().items():
            if self._published.get(ch) == state:
                continue
            self._published[ch] = dict(state)
            if self.on_change is not None:
                try:
                    self.on_change(ch, dict(state))
                except Exception:
                    log.exception("on_change callback failed for channel %d", ch)

    # -- dispatch ------------------------------------------------------------

    def _execute_unit(self, unit: str, session: Session) -> str | None:
        header, _, rest = unit.partition(" ")
        if "\t" in header:
            header, _, more = header.partition("\t")
            rest = more + " " + rest
        if not _HEADER.match(header):
            raise SCPIError(-102, f"bad header {header!r}")
        query = header.endswith("?")
        bare = header.rstrip("?")
        params = split_params(rest)
        if bare.startswith("*"):
            command = self._common.get(bare.upper())
            suffixes: list[int] = []
        else:
            command, suffixes = self._lookup(bare)
        if command is None:
            raise SCPIError(-113, header)
        handler = command.query if query else command.setter
        if handler is None:
            raise SCPIError(-100, f"{header} cannot be {'queried' if query else 'set'}")
        return handler(Call(header, query, suffixes, params, session))

    def _lookup(self, header: str) -> tuple[_Command | None, list[int]]:
        tokens: list[tuple[str, str]] = []
        for part in header.lstrip(":").split(":"):
            m = _TOKEN.match(part)
            if m is None:
                raise SCPIError(-102, header)
            tokens.append((m[1].upper(), m[2]))
        for command in self._commands:
            suffixes = _match(command.nodes, tokens)
            if suffixes is not None:
                return command, suffixes
        return None, []

    # -- common and system commands ----------------------------------------

    def _register_base(self) -> None:
        self.add("*IDN", query=self._q_idn)
        self.add("*RST", setter=self._s_rst)
        self.add("*CLS", setter=self._s_cls)
        self.add("*OPC", setter=self._s_opc, query=self._q_opc)
        self.add("*WAI", setter=self._s_wai)
        self.add("*ESR", query=self._q_esr)
        self.add("*ESE", setter=self._s_ese, query=self._q_ese)
        self.add("*SRE", setter=self._s_sre, query=self._q_sre)
        self.add("*STB", query=self._q_stb)
        self.add("*TST", query=self._q_tst)
        self.add("SYSTem:ERRor[:NEXT]", query=self._q_err)
        self.add("SYSTem:ERRor:COUNt", query=self._q_err_count)
        self.add("SYSTem:VERSion", query=self._q_version)
        self.add("DIAGnostic:FAULt:HANG", setter=self._s_hang)
        self.add("DIAGnostic:FAULt:DROP", setter=self._s_drop)
        self.add("DIAGnostic:FAULt:DELay", setter=self._s_delay, query=self._q_delay)
        self.add("DIAGnostic:FAULt:ERRor", setter=self._s_error)
        self.add("DIAGnostic:FAULt:CLEar", setter=self._s_fault_clear)

    def _q_idn(self, call: Call) -> str:
        call.expect(0)
        return self.idn

    def _s_rst(self, call: Call) -> None:
        call.expect(0)
        self.reset()

    def _s_cls(self, call: Call) -> None:
        call.expect(0)
        self.errors.clear()
        self._status.esr = 0

    def _s_opc(self, call: Call) -> None:
        call.expect(0)
        self._status.esr |= ESR_OPC

    def _q_opc(self, call: Call) -> str:
        call.expect(0)
        return "1"

    def _s_wai(self, call: Call) -> None:
        call.expect(0)

    def _q_esr(self, call: Call) -> str:
        call.expect(0)
        value, self._status.esr = self._status.esr, 0
        return str(value)

    def _s_ese(self, call: Call) -> None:
        self._status.ese = int(parse_number(call.expect(1)[0], lo=0, hi=255, default=0))

    def _q_ese(self, call: Call) -> str:
        call.expect(0)
        return str(self._status.ese)

    def _s_sre(self, call: Call) -> None:
        self._status.sre = int(parse_number(call.expect(1)[0], lo=0, hi=255, default=0))

    def _q_sre(self, call: Call) -> str:
        call.expect(0)
        return str(self._status.sre)

    def _q_stb(self, call: Call) -> str:
        call.expect(0)
        stb = STB_EAV if len(self.errors) else 0
        if self._status.esr & self._status.ese:
            stb |= STB_ESB
        return str(stb)

    def _q_tst(self, call: Call) -> str:
        call.expect(0)
        return "0"

    def _q_err(self, call: Call) -> str:
        call.expect(0)
        code, text = self.errors.pop()
        return f'{code},"{text}"'

    def _q_err_count(self, call: Call) -> str:
        call.expect(0)
        return str(len(self.errors))

    def _q_version(self, call: Call) -> str:
        call.expect(0)
        return "1999.0"

    def _s_hang(self, call: Call) -> None:
        call.session.hang = parse_number(call.expect(1)[0], lo=0, hi=3600, default=0)

    def _s_drop(self, call: Call) -> None:
        call.expect(0)
        call.session.drop = True

    def _s_delay(self, call: Call) -> None:
        self.faults.delay = parse_number(call.expect(1)[0], lo=0, hi=3600, default=0)

    def _q_delay(self, call: Call) -> str:
        call.expect(0)
        return format_float(self.faults.delay)

    def _s_error(self, call: Call) -> None:
        text = call.expect(1)[0]
        if not re.fullmatch(r"[+-]?\d+", text) or int(text) == 0:
            raise SCPIError(-224, f"not an error code: {text!r}")
        self.push_error(int(text))

    def _s_fault_clear(self, call: Call) -> None:
        call.expect(0)
        self.faults = FaultState()
        call.session.hang = 0.0


@dataclass
class ChannelArgs:
    """A set command's value and the channels it applies to (power-supply style)."""

    values: list[str] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)


def channel_args(call: Call, channels: int, values: int, optional_values: int = 0) -> ChannelArgs:
    """Split ``<values...>[,(@list)]``: the list defaults to channel 1."""
    params = list(call.params)
    chans = [1]
    if params and is_channel_list(params[-1]):
        chans = parse_channel_list(params.pop(), channels)
    if any(is_channel_list(p) for p in params):
        raise SCPIError(-102, "channel list must come last")
    if len(params) < values:
        raise SCPIError(-109, call.header)
    if len(params) > values + optional_values:
        raise SCPIError(-108, call.header)
    return ChannelArgs(params, chans)
