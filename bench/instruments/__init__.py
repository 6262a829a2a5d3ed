"""SCPI instrument drivers over VISA (pyvisa + pyvisa-py) and their registry by ``kind:``."""

from bench.instruments.attenuator import OpticalAttenuator
from bench.instruments.errors import (
    ChannelOutOfRange,
    InstrumentBusy,
    InstrumentConnectionError,
    InstrumentConnectionLost,
    InstrumentError,
    InstrumentIdentityError,
    InstrumentTimeout,
    ScpiErrorEntry,
)
from bench.instruments.power_supply import PowerSupply
from bench.instruments.registry import driver_for, kinds, open_instrument, register
from bench.instruments.scpi_instrument import ChannelInstrument, Identity, ScpiInstrument

__all__ = [
    "ChannelInstrument",
    "ChannelOutOfRange",
    "Identity",
    "InstrumentBusy",
    "InstrumentConnectionError",
    "InstrumentConnectionLost",
    "InstrumentError",
    "InstrumentIdentityError",
    "InstrumentTimeout",
    "OpticalAttenuator",
    "PowerSupply",
    "ScpiErrorEntry",
    "ScpiInstrument",
    "driver_for",
    "kinds",
    "open_instrument",
    "register",
]
