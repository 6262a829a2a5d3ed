"""An N-channel optical attenuator with shutters (Keysight N7764A / 8163 style).

Commands (``<n>`` = channel, 1..N, default 1; another suffix gives -114):

* ``:INPut<n>:ATTenuation <dB>`` / ``:INPut<n>:ATTenuation? [MIN|MAX|DEF]``: 0..60 dB, DEF 0,
  unit DB accepted.
* ``:INPut<n>:WAVelength <m>`` / ``?``: 1260..1640 nm, DEF 1550 nm; meters unless a unit
  is given (``1550NM``, ``1.55UM``, ``1.55E-6``); answers meters, ``+1.55000000E-006``.
* ``:OUTPut<n>[:STATe] ON|OFF|1|0`` / ``?``: the shutter (OFF = closed). Open at power-up
  and after ``*RST``, so that emulated links start up.
* ``:DIAGnostic:THReshold<n> <dB>`` / ``?`` (vendor): the receiver threshold, DEF 30 dB;
  attenuation above it means the light no longer reaches the receiver.
* ``:DIAGnostic:LIGHt<n>?`` (vendor): 1 when light reaches the receiver, else 0.

State given to ``on_change``: ``{"light": bool, "attenuation_db": float, "shutter_open": bool}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.instruments.emulators.scpi import (
    Call,
    SCPIError,
    SCPIInstrument,
    State,
    StateCallback,
    format_bool,
    format_float3,
    limit_keyword,
    parse_bool,
    parse_number,
)

ATTENUATION_RANGE = (0.0, 60.0, 0.0)  # lo, hi, default
WAVELENGTH_RANGE = (1260e-9, 1640e-9, 1550e-9)
THRESHOLD_RANGE = (0.0, 60.0, 30.0)
DB_UNITS = {"DB": 1.0}
METER_UNITS = {"M": 1.0, "MM": 1e-3, "UM": 1e-6, "NM": 1e-9, "PM": 1e-12}


@dataclass
class OpticalChannel:
    attenuation_db: float = ATTENUATION_RANGE[2]
    wavelength_m: float = WAVELENGTH_RANGE[2]
    shutter_open: bool = True
    threshold_db: float = THRESHOLD_RANGE[2]

    @property
    def light(self) -> bool:
        """True when light reaches the receiver: shutter open, attenuation within threshold."""
        return self.shutter_open and self.attenuation_db <= self.threshold_db


class OpticalAttenuator(SCPIInstrument):
    """The emulated attenuator; ``channel(n)`` gives a channel's :class:`OpticalChannel`."""

    model = "NPA-ATT"

    def __init__(
        self,
        channels: int = 4,
        serial: str = "0001",
        on_change: StateCallback | None = None,
        threshold_db: float = THRESHOLD_RANGE[2],
    ) -> None:
        super().__init__(channels, serial, on_change)
        self._default_threshold = threshold_db
        self._channels = [OpticalChannel(threshold_db=threshold_db) for _ in range(channels)]
        self.add(":INPut#:ATTenuation", self._s_attenuation, self._q_attenuation)
        self.add(":INPut#:WAVelength", self._s_wavelength, self._q_wavelength)
        self.add(":OUTPut#[:STATe]", self._s_shutter, self._q_shutter)
        self.add(":DIAGnostic:THReshold#", self._s_threshold, self._q_threshold)
        self.add(":DIAGnostic:LIGHt#", query=self._q_light)
        self.settle()

    def channel(self, channel: int) -> OpticalChannel:
        return self._channels[channel - 1]

    def set_threshold(self, channel: int, threshold_db: float) -> None:
        """The receiver threshold of one channel (a property of the model), then publish."""
        self.channel(channel).threshold_db = threshold_db
        self.publish()

    def channel_state(self, channel: int) -> State:
        ch = self.channel(channel)
        return {
            "light": ch.light,
            "attenuation_db": ch.attenuation_db,
            "shutter_open": ch.shutter_open,
        }

    def reset(self) -> None:
        # The receiver threshold belongs to the link, not to the instrument: *RST keeps it.
        self._channels = [OpticalChannel(threshold_db=ch.threshold_db) for ch in self._channels]

    # -- handlers ------------------------------------------------------------

    def _target(self, call: Call) -> OpticalChannel:
        n = call.suffix
        if not 1 <= n <= self.channels:
            raise SCPIError(-114, f"channel {n} not in 1..{self.channels}")
        return self.channel(n)

    def _limit_query(self, call: Call, rng: tuple[float, float, float]) -> float | None:
        params = call.expect(0, 1)
        if not params:
            return None
        keyword = limit_keyword(params[0])
        if keyword is None:
            raise SCPIError(-224, f"expected MIN|MAX|DEF, got {params[0]!r}")
        return {"min": rng[0], "max": rng[1], "def": rng[2]}[keyword]

    def _s_attenuation(self, call: Call) -> None:
        ch = self._target(call)
        lo, hi, default = ATTENUATION_RANGE
        value = parse_number(call.expect(1)[0], lo=lo, hi=hi, default=default, units=DB_UNITS)
        ch.attenuation_db = value

    def _q_attenuation(self, call: Call) -> str:
        ch = self._target(call)
        limit = self._limit_query(call, ATTENUATION_RANGE)
        return format_float3(ch.attenuation_db if limit is None else limit)

    def _s_wavelength(self, call: Call) -> None:
        ch = self._target(call)
        lo, hi, default = WAVELENGTH_RANGE
        value = parse_number(call.expect(1)[0], lo=lo, hi=hi, default=default, units=METER_UNITS)
        ch.wavelength_m = value

    def _q_wavelength(self, call: Call) -> str:
        ch = self._target(call)
        limit = self._limit_query(call, WAVELENGTH_RANGE)
        return format_float3(ch.wavelength_m if limit is None else limit)

    def _s_shutter(self, call: Call) -> None:
        ch = self._target(call)
        ch.shutter_open = parse_bool(call.expect(1)[0])

    def _q_shutter(self, call: Call) -> str:
        ch = self._target(call)
        call.expect(0)
        return format_bool(ch.shutter_open)

    def _s_threshold(self, call: Call) -> None:
        ch = self._target(call)
        lo, hi, default = THRESHOLD_RANGE
        value = parse_number(call.expect(1)[0], lo=lo, hi=hi, default=default, units=DB_UNITS)
        ch.threshold_db = value

    def _q_threshold(self, call: Call) -> str:
        ch = self._target(call)
        limit = self._limit_query(call, THRESHOLD_RANGE)
        return format_float3(ch.threshold_db if limit is None else limit)

    def _q_light(self, call: Call) -> str:
        ch = self._target(call)
        call.expect(0)
        return format_bool(ch.light)
