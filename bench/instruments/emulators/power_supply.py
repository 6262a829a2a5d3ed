"""An N-channel programmable power supply, Keysight E36313A-like.

Commands (channel list last and optional, default ``(@1)``; queries of several
channels answer comma-separated values):

* ``VOLTage[:LEVel][:IMMediate][:AMPLitude] <v>[,(@list)]`` / ``VOLTage? [MIN|MAX|DEF,][(@list)]``
  0..30 V, DEF 0; units V, MV.
* ``CURRent[:LEVel][:IMMediate][:AMPLitude] <a>[,(@list)]`` / ``?``: 0..5 A, DEF 1; units A, MA.
* ``OUTPut[:STATe] ON|OFF|1|0[,(@list)]`` / ``OUTPut? [(@list)]``; ON while tripped: -221.
* ``MEASure[:SCALar]:VOLTage[:DC]? [(@list)]``: the set voltage when the output is on
  (and not tripped), else 0.
* ``MEASure[:SCALar]:CURRent[:DC]? [(@list)]``: min(V / R_load, current limit).
* ``VOLTage:PROTection[:LEVel] <v>[,(@list)]`` / ``?``: 0..33 V, DEF 32.
* ``VOLTage:PROTection:TRIPped? [(@list)]``: 1 once the set voltage exceeded the
  protection level with the output on (the output then turned off).
* ``VOLTage:PROTection:CLEar [(@list)]``: clears the trip; the output stays off.
* ``DIAGnostic:LOAD <ohm>[,(@list)]`` / ``?`` (vendor): the load resistance, DEF 12 ohm.

State given to ``on_change``: ``{"powered": bool, "voltage": float}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.instruments.emulators.scpi import (
    Call,
    SCPIError,
    SCPIInstrument,
    State,
    StateCallback,
    channel_args,
    format_bool,
    format_float,
    limit_keyword,
    parse_bool,
    parse_number,
)

VOLTAGE_RANGE = (0.0, 30.0, 0.0)  # lo, hi, default
CURRENT_RANGE = (0.0, 5.0, 1.0)
OVP_RANGE = (0.0, 33.0, 32.0)
LOAD_RANGE = (0.001, 1e6, 12.0)
VOLT_UNITS = {"V": 1.0, "MV": 1e-3}
AMP_UNITS = {"A": 1.0, "MA": 1e-3}
OHM_UNITS = {"OHM": 1.0, "KOHM": 1e3}


@dataclass
class PowerChannel:
    voltage: float = VOLTAGE_RANGE[2]
    current_limit: float = CURRENT_RANGE[2]
    output: bool = False
    ovp_level: float = OVP_RANGE[2]
    tripped: bool = False
    load_ohm: float = LOAD_RANGE[2]

    @property
    def powered(self) -> bool:
        return self.output and not self.tripped

    def measured_voltage(self) -> float:
        return self.voltage if self.powered else 0.0

    def measured_current(self) -> float:
        if not self.powered:
            return 0.0
        return min(self.voltage / self.load_ohm, self.current_limit)


class PowerSupply(SCPIInstrument):
    """The emulated power supply; ``channel(n)`` gives a channel's :class:`PowerChannel`."""

    model = "NPA-PSU"

    def __init__(
        self,
        channels: int = 3,
        serial: str = "0001",
        on_change: StateCallback | None = None,
        load_ohm: float = LOAD_RANGE[2],
    ) -> None:
        super().__init__(channels, serial, on_change)
        self._default_load = load_ohm
        self._channels = [PowerChannel(load_ohm=load_ohm) for _ in range(channels)]
        num = "VOLTage[:LEVel][:IMMediate][:AMPLitude]"
        self.add(num, self._s_voltage, self._q_voltage)
        self.add("CURRent[:LEVel][:IMMediate][:AMPLitude]", self._s_current, self._q_current)
        self.add("OUTPut[:STATe]", self._s_output, self._q_output)
        self.add("MEASure[:SCALar]:VOLTage[:DC]", query=self._q_meas_voltage)
        self.add("MEASure[:SCALar]:CURRent[:DC]", query=self._q_meas_current)
        self.add("VOLTage:PROTection[:LEVel]", self._s_ovp, self._q_ovp)
        self.add("VOLTage:PROTection:TRIPped", query=self._q_tripped)
        self.add("VOLTage:PROTection:CLEar", setter=self._s_ovp_clear)
        self.add("DIAGnostic:LOAD", self._s_load, self._q_load)
        self.settle()

    def channel(self, channel: int) -> PowerChannel:
        return self._channels[channel - 1]

    def channel_state(self, channel: int) -> State:
        ch = self.channel(channel)
        return {"powered": ch.powered, "voltage": ch.measured_voltage()}

    def reset(self) -> None:
        self._channels = [PowerChannel(load_ohm=self._default_load) for _ in self._channels]

    def _check_ovp(self, ch: PowerChannel) -> None:
        if ch.output and ch.voltage > ch.ovp_level:
            ch.tripped = True
            ch.output = False

    # -- handlers ----------------------------------------------------------

    def _set_number(
        self,
        call: Call,
        rng: tuple[float, float, float],
        units: dict[str, float],
        attr: str,
    ) -> None:
        args = channel_args(call, self.channels, 1)
        value = parse_number(args.values[0], lo=rng[0], hi=rng[1], default=rng[2], units=units)
        for n in args.channels:
            ch = self.channel(n)
            setattr(ch, attr, value)
            self._check_ovp(ch)

    def _query_number(self, call: Call, rng: tuple[float, float, float], attr: str) -> str:
        args = channel_args(call, self.channels, 0, optional_values=1)
        if args.values:
            keyword = limit_keyword(args.values[0])
            if keyword is None:
                raise SCPIError(-224, f"expected MIN|MAX|DEF, got {args.values[0]!r}")
            value = {"min": rng[0], "max": rng[1], "def": rng[2]}[keyword]
            return ",".join(format_float(value) for _ in args.channels)
        return ",".join(format_float(getattr(self.channel(n), attr)) for n in args.channels)

    def _s_voltage(self, call: Call) -> None:
        self._set_number(call, VOLTAGE_RANGE, VOLT_UNITS, "voltage")

    def _q_voltage(self, call: Call) -> str:
        return self._query_number(call, VOLTAGE_RANGE, "voltage")

    def _s_current(self, call: Call) -> None:
        self._set_number(call, CURRENT_RANGE, AMP_UNITS, "current_limit")

    def _q_current(self, call: Call) -> str:
        return self._query_number(call, CURRENT_RANGE, "current_limit")

    def _s_ovp(self, call: Call) -> None:
        self._set_number(call, OVP_RANGE, VOLT_UNITS, "ovp_level")

    def _q_ovp(self, call: Call) -> str:
        return self._query_number(call, OVP_RANGE, "ovp_level")

    def _s_load(self, call: Call) -> None:
        self._set_number(call, LOAD_RANGE, OHM_UNITS, "load_ohm")

    def _q_load(self, call: Call) -> str:
        return self._query_number(call, LOAD_RANGE, "load_ohm")

    def _s_output(self, call: Call) -> None:
        args = channel_args(call, self.channels, 1)
        on = parse_bool(args.values[0])
        targets = [self.channel(n) for n in args.channels]
        if on and any(ch.tripped for ch in targets):
            raise SCPIError(-221, "over-voltage protection tripped: clear it first")
        for ch in targets:
            ch.output = on
            self._check_ovp(ch)

    def _q_output(self, call: Call) -> str:
        args = channel_args(call, self.channels, 0)
        return ",".join(format_bool(self.channel(n).output) for n in args.channels)

    def _q_meas_voltage(self, call: Call) -> str:
        args = channel_args(call, self.channels, 0)
        return ",".join(format_float(self.channel(n).measured_voltage()) for n in args.channels)

    def _q_meas_current(self, call: Call) -> str:
        args = channel_args(call, self.channels, 0)
        return ",".join(format_float(self.channel(n).measured_current()) for n in args.channels)

    def _q_tripped(self, call: Call) -> str:
        args = channel_args(call, self.channels, 0)
        return ",".join(format_bool(self.channel(n).tripped) for n in args.channels)

    def _s_ovp_clear(self, call: Call) -> None:
        args = channel_args(call, self.channels, 0)
        for n in args.channels:
            self.channel(n).tripped = False
