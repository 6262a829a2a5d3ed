"""Optical attenuator / optical switch (Keysight 8157xB / N7764A-style SCPI).

The shutter is the output state (``:OUTP<n>:STAT``): open lets light
through, closed takes the link down without touching the hosts. Wavelength
travels in metres on the wire and in nanometres in this API.
"""

from __future__ import annotations

from bench.instruments.registry import register
from bench.instruments.scpi_instrument import ChannelInstrument, scpi_number


@register("optical-attenuator")
class OpticalAttenuator(ChannelInstrument):
    """An attenuator with ``channels`` inputs; every call drains the error queue."""

    def set_attenuation(self, channel: int, db: float) -> None:
        """Set the attenuation of ``channel`` (dB)."""
        ch = self.check_channel(channel)
        with self.commands():
            self.write(f":INP{ch}:ATT {scpi_number(db)}")

    def attenuation(self, channel: int) -> float:
        """The attenuation of ``channel`` (dB)."""
        ch = self.check_channel(channel)
        with self.commands():
            return self.query_float(f":INP{ch}:ATT?")

    def set_wavelength(self, channel: int, nm: float) -> None:
        """Set the calibration wavelength of ``channel`` (nm)."""
        ch = self.check_channel(channel)
        with self.commands():
            self.write(f":INP{ch}:WAV {scpi_number(nm * 1e-9)}")

    def wavelength(self, channel: int) -> float:
        """The calibration wavelength of ``channel`` (nm, rounded to 1 pm)."""
        ch = self.check_channel(channel)
        with self.commands():
            metres = self.query_float(f":INP{ch}:WAV?")
        return round(metres * 1e9, 3)

    def set_shutter(self, channel: int, open: bool) -> None:
        """Open (light passes) or close (link dark) the shutter of ``channel``."""
        ch = self.check_channel(channel)
        with self.commands():
            self.write(f":OUTP{ch}:STAT {'ON' if open else 'OFF'}")

    def shutter_open(self, channel: int) -> bool:
        """Whether the shutter of ``channel`` is open."""
        ch = self.check_channel(channel)
        with self.commands():
            return self.query_bool(f":OUTP{ch}:STAT?")
