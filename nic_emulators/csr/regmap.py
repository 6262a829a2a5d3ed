"""Register map of the emulated FPGA NIC (model ``fpga-nic``).

All registers are 32 bits wide, at byte addresses aligned to 4.

Global registers::

    0x0000  ID        RO  0x4E504147 ("NPAG")
    0x0004  VERSION   RO  0x00090000 (0.9: major in bits 31..16, minor in 15..0)
    0x0008  SCRATCH   RW  plain storage (the classic register-access test)
    0x0010  STATUS    RO  bit0 powered, bit1 link up
    0x0014  CONTROL   RW  bit0 link enable: a write calls ``set_link(bit0)``;
                          a read returns the current link state in bit0.
                          Other bits read 0 and are ignored on write.
    0x0020  VF_TOTAL  RO  the board's maximum number of VFs
    0x0024  VF_COUNT  RW  VFs enabled now; a write calls ``set_vf_count``,
                          a value the board refuses gives "bad request"
    0x0028  VF_RESET  WO  write an enabled VF's number to reset it; reads 0

Per VF ``n`` (``n < VF_TOTAL``; enabled or not), a block at
``0x1000 + n * 0x40``::

    +0x00  MAC_LO         RO  last 4 bytes of the MAC (``mac[2:6]`` as u32)
    +0x04  MAC_HI         RO  first 2 bytes of the MAC in bits 15..0
    +0x10  TX_PACKETS_LO  RO  \
    +0x14  TX_PACKETS_HI  RO   |
    +0x18  RX_PACKETS_LO  RO   |  64-bit totals since the VF was created or
    +0x1C  RX_PACKETS_HI  RO   |  reset, split in low and high halves
    +0x20  TX_BYTES_LO    RO   |
    +0x24  TX_BYTES_HI    RO   |
    +0x28  RX_BYTES_LO    RO   |
    +0x2C  RX_BYTES_HI    RO  /
    +0x30  DROPS          RO  32 bits, saturating at 0xFFFFFFFF

Reading a 64-bit counter: read _LO, then _HI. As real hardware does, a read of
a _LO register *latches* the whole 64-bit value; the next read of the same
counter's _HI returns the latched high half (and consumes the latch), so the
two halves belong together even if the counter carries between the reads. A
_HI read with no latch pending returns the live high half. There is one latch
per counter on the board, shared by every client — as on hardware, two
clients interleaving LO/HI reads of the same counter can disturb each other
(the client's ``read64`` pipelines both reads, which the server handles as
one unit).

While the board is not powered only ID, VERSION and STATUS answer; every other
register gives status 4 (powered off). Normally the CSR endpoint goes away
with power anyway; this covers the moment in between.

Any address not listed gives "bad address"; a write to a read-only register
gives "read-only". ``RegisterMap.read``/``write`` raise ``CsrFault(status)``
for those, and the server turns that into the response's status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from nic_emulators.csr.protocol import U32_MAX, Op, Status, status_text

ID_VALUE = 0x4E50_4147  # "NPAG"
VERSION_VALUE = 0x0009_0000  # 0.9

STATUS_POWERED = 1 << 0
STATUS_LINK_UP = 1 << 1
CONTROL_LINK_ENABLE = 1 << 0

#: Global registers by name.
REGISTERS: dict[str, int] = {
    "ID": 0x0000,
    "VERSION": 0x0004,
    "SCRATCH": 0x0008,
    "STATUS": 0x0010,
    "CONTROL": 0x0014,
    "VF_TOTAL": 0x0020,
    "VF_COUNT": 0x0024,
    "VF_RESET": 0x0028,
}

VF_BASE = 0x1000
VF_STRIDE = 0x40

#: Registers of a VF block by name, as offsets from the block's base.
VF_REGISTERS: dict[str, int] = {
    "MAC_LO": 0x00,
    "MAC_HI": 0x04,
    "TX_PACKETS_LO": 0x10,
    "TX_PACKETS_HI": 0x14,
    "RX_PACKETS_LO": 0x18,
    "RX_PACKETS_HI": 0x1C,
    "TX_BYTES_LO": 0x20,
    "TX_BYTES_HI": 0x24,
    "RX_BYTES_LO": 0x28,
    "RX_BYTES_HI": 0x2C,
    "DROPS": 0x30,
}

#: The 64-bit counters of a VF block: register stem -> key in ``vf_counters``.
VF_COUNTERS: dict[str, str] = {
    "TX_PACKETS": "tx_packets",
    "RX_PACKETS": "rx_packets",
    "TX_BYTES": "tx_bytes",
    "RX_BYTES": "rx_bytes",
}

_GLOBAL_BY_ADDR = {addr: name for name, addr in REGISTERS.items()}
_VF_BY_OFFSET = {offset: name for name, offset in VF_REGISTERS.items()}
#: Readable while the board is not powered.
_ALWAYS_ON = frozenset({"ID", "VERSION", "STATUS"})
_READ_ONLY = frozenset({"ID", "VERSION", "STATUS", "VF_TOTAL"})


class FpgaBoard(Protocol):
    """What the register map needs from the NIC emulator's FPGA board."""

    @property
    def powered(self) -> bool: ...

    @property
    def link_up(self) -> bool: ...

    @property
    def vf_count(self) -> int:
        """VFs enabled now."""
        ...

    @property
    def vf_total(self) -> int:
        """The board's maximum."""
        ...

    def vf_mac(self, vf: int) -> bytes:
        """6 bytes; ``b"\\0" * 6`` if not set."""
        ...

    def vf_counters(self, vf: int) -> dict[str, int]:
        """Totals: tx_packets, tx_bytes, rx_packets, rx_bytes, drops."""
        ...

    def set_link(self, up: bool) -> None: ...

    def set_vf_count(self, n: int) -> None:
        """Raises ValueError if ``n > vf_total``."""
        ...

    def reset_vf(self, vf: int) -> None: ...


class CsrFault(Exception):
    """A register access refused with a CSR status (``protocol.Status``)."""

    def __init__(self, status: Status, addr: int, detail: str = "") -> None:
        self.status = status
        self.addr = addr
        self.detail = detail
        name = register_name(addr)
        where = f"{name} ({addr:#06x})" if name else f"{addr:#06x}"
        text = f"{where}: {status_text(status)}"
        super().__init__(f"{text}: {detail}" if detail else text)


def vf_register(vf: int, name: str) -> int:
    """Address of register ``name`` (e.g. ``"TX_BYTES_LO"``) of VF ``vf``."""
    if vf < 0:
        raise ValueError(f"VF number {vf} is negative")
    try:
        return VF_BASE + vf * VF_STRIDE + VF_REGISTERS[name]
    except KeyError:
        raise KeyError(f"no VF register {name!r}; known: {', '.join(VF_REGISTERS)}") from None


def register_address(name: str) -> int:
    """Address of a register by symbolic name: ``"SCRATCH"`` or ``"VF3.TX_BYTES_LO"``."""
    if name in REGISTERS:
        return REGISTERS[name]
    vf, dot, reg = name.partition(".")
    if dot and vf.startswith("VF") and vf[2:].isdigit():
        return vf_register(int(vf[2:]), reg)
    raise KeyError(f"no register {name!r}")


def register_name(addr: int) -> str | None:
    """Symbolic name of ``addr`` (``"VF3.TX_BYTES_LO"`` for a VF register), None if none.

    VF blocks are named whatever the board's VF_TOTAL; the map decides
    whether the VF exists.
    """
    if addr in _GLOBAL_BY_ADDR:
        return _GLOBAL_BY_ADDR[addr]
    if addr >= VF_BASE:
        vf, offset = divmod(addr - VF_BASE, VF_STRIDE)
        reg = _VF_BY_OFFSET.get(offset)
        if reg is not None:
            return f"VF{vf}.{reg}"
    return None


@dataclass(frozen=True)
class _Decoded:
    name: str  # global register name, or the VF register name
    vf: int | None = None


class RegisterMap:
    """The live register map of one board; used by the CSR server (and tests)."""

    def __init__(self, board: FpgaBoard) -> None:
        self.board = board
        self.scratch = 0
        #: (vf, counter stem) -> 64-bit value latched by the last _LO read.
        self._latched: dict[tuple[int, str], int] = {}

    def reset(self) -> None:
        """Power-on state of the map itself: SCRATCH 0, no latched counters."""
        self.scratch = 0
        self._latched.clear()

    # -- decoding ---------------------------------------------------------

    def _decode(self, addr: int) -> _Decoded:
        if addr in _GLOBAL_BY_ADDR:
            return _Decoded(_GLOBAL_BY_ADDR[addr])
        if addr >= VF_BASE:
            vf, offset = divmod(addr - VF_BASE, VF_STRIDE)
            reg = _VF_BY_OFFSET.get(offset)
            if reg is not None and vf < self.board.vf_total:
                return _Decoded(reg, vf)
        if addr % 4:
            raise CsrFault(Status.BAD_ADDRESS, addr, "not aligned to 4 bytes")
        raise CsrFault(Status.BAD_ADDRESS, addr)

    def _check_power(self, reg: _Decoded, addr: int) -> None:
        if not self.board.powered and (reg.vf is not None or reg.name not in _ALWAYS_ON):
            raise CsrFault(Status.POWERED_OFF, addr)

    # -- access -----------------------------------------------------------

    def access(self, op: Op, addr: int, value: int = 0) -> int:
        """One request: the value to answer with (read value, or the value written)."""
        if op is Op.READ:
            return self.read(addr)
        self.write(addr, value)
        return value

    def read(self, addr: int) -> int:
        """The register's value; CsrFault if the access is refused."""
        reg = self._decode(addr)
        self._check_power(reg, addr)
        if reg.vf is not None:
            return self._read_vf(reg.vf, reg.name) & U32_MAX
        board = self.board
        match reg.name:
            case "ID":
                return ID_VALUE
            case "VERSION":
                return VERSION_VALUE
            case "SCRATCH":
                return self.scratch
            case "STATUS":
                return (STATUS_POWERED if board.powered else 0) | (
                    STATUS_LINK_UP if board.link_up else 0
                )
            case "CONTROL":
                return CONTROL_LINK_ENABLE if board.link_up else 0
            case "VF_TOTAL":
                return board.vf_total & U32_MAX
            case "VF_COUNT":
                return board.vf_count & U32_MAX
            case "VF_RESET":
                return 0
        raise AssertionError(f"register {reg.name} has no read handler")  # pragma: no cover

    def _read_vf(self, vf: int, name: str) -> int:
        board = self.board
        if name == "MAC_LO":
            return int.from_bytes(_mac(board.vf_mac(vf))[2:6], "big")
        if name == "MAC_HI":
            return int.from_bytes(_mac(board.vf_mac(vf))[0:2], "big")
        if name == "DROPS":
            return min(board.vf_counters(vf).get("drops", 0), U32_MAX)
        stem, _, half = name.rpartition("_")
        key = (vf, stem)
        if half == "LO":
            value = board.vf_counters(vf).get(VF_COUNTERS[stem], 0) & 0xFFFF_FFFF_FFFF_FFFF
            self._latched[key] = value
            return value & U32_MAX
        latched = self._latched.pop(key, None)
        if latched is None:
            latched = board.vf_counters(vf).get(VF_COUNTERS[stem], 0) & 0xFFFF_FFFF_FFFF_FFFF
        return latched >> 32

    def write(self, addr: int, value: int) -> None:
        """Write the register; CsrFault if the access is refused."""
        reg = self._decode(addr)
        self._check_power(reg, addr)
        if not 0 <= value <= U32_MAX:
            raise CsrFault(Status.BAD_REQUEST, addr, f"value {value:#x} does not fit in 32 bits")
        if reg.vf is not None or reg.name in _READ_ONLY:
            raise CsrFault(Status.READ_ONLY, addr)
        board = self.board
        try:
            match reg.name:
                case "SCRATCH":
                    self.scratch = value
                case "CONTROL":
                    board.set_link(bool(value & CONTROL_LINK_ENABLE))
                case "VF_COUNT":
                    board.set_vf_count(value)
                case "VF_RESET":
                    if value >= board.vf_count:
                        raise CsrFault(Status.BAD_REQUEST, addr, f"VF {value} is not enabled")
                    board.reset_vf(value)
                case _:  # pragma: no cover
                    raise AssertionError(f"register {reg.name} has no write handler")
        except ValueError as err:  # the board refused the value
            raise CsrFault(Status.BAD_REQUEST, addr, str(err)) from err


def _mac(mac: bytes) -> bytes:
    if len(mac) != 6:
        raise ValueError(f"a MAC is 6 bytes, the board gave {len(mac)}")
    return mac
