"""Multi-channel programmable power supply (Keysight E36313A-style SCPI).

Channels are addressed with SCPI channel lists (``(@2)``), the form the
E3631xA family and the bench's emulator share. Method names follow labgrid's
power protocol (``power_set`` / ``power_get``) so a strategy can switch a
board's supply without knowing the instrument.
"""

from __future__ import annotations

from bench.instruments.registry import register
from bench.instruments.scpi_instrument import ChannelInstrument, scpi_number


@register("power-supply")
class PowerSupply(ChannelInstrument):
    """A power supply with ``channels`` outputs; every setter drains the error queue."""

    def _set(self, command: str) -> None:
        with self.commands():
            self.write(command)

    def _get_float(self, command: str) -> float:
        with self.commands():
            return self.query_float(command)

    def _get_bool(self, command: str) -> bool:
        with self.commands():
            return self.query_bool(command)

    def set_voltage(self, channel: int, volts: float) -> None:
        """Set the output voltage of ``channel`` (V)."""
        ch = self.check_channel(channel)
        self._set(f"VOLT {scpi_number(volts)},(@{ch})")

    def voltage(self, channel: int) -> float:
        """The voltage setting of ``channel`` (V), not the measured value."""
        return self._get_float(f"VOLT? (@{self.check_channel(channel)})")

    def set_current_limit(self, channel: int, amps: float) -> None:
        """Set the current limit of ``channel`` (A)."""
        ch = self.check_channel(channel)
        self._set(f"CURR {scpi_number(amps)},(@{ch})")

    def current_limit(self, channel: int) -> float:
        """The current limit of ``channel`` (A)."""
        return self._get_float(f"CURR? (@{self.check_channel(channel)})")

    def power_set(self, channel: int, on: bool) -> None:
        """Switch the output of ``channel`` on or off."""
        ch = self.check_channel(channel)
        self._set(f"OUTP {'ON' if on else 'OFF'},(@{ch})")

    def power_get(self, channel: int) -> bool:
        """Whether the output of ``channel`` is on."""
        return self._get_bool(f"OUTP? (@{self.check_channel(channel)})")

    def measure_voltage(self, channel: int) -> float:
        """The voltage measured at the output of ``channel`` (V)."""
        return self._get_float(f"MEAS:VOLT? (@{self.check_channel(channel)})")

    def measure_current(self, channel: int) -> float:
        """The current measured at the output of ``channel`` (A)."""
        return self._get_float(f"MEAS:CURR? (@{self.check_channel(channel)})")

    def set_ovp(self, channel: int, volts: float) -> None:
        """Set the over-voltage protection level of ``channel`` (V)."""
        ch = self.check_channel(channel)
        self._set(f"VOLT:PROT {scpi_number(volts)},(@{ch})")

    def ovp(self, channel: int) -> float:
        """The over-voltage protection level of ``channel`` (V)."""
        return self._get_float(f"VOLT:PROT? (@{self.check_channel(channel)})")

    def ovp_tripped(self, channel: int) -> bool:
        """Whether over-voltage protection has tripped on ``channel``."""
        return self._get_bool(f"VOLT:PROT:TRIP? (@{self.check_channel(channel)})")

    def clear_ovp(self, channel: int) -> None:
        """Clear a tripped over-voltage protection on ``channel``."""
        self._set(f"VOLT:PROT:CLE (@{self.check_channel(channel)})")
