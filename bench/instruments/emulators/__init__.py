"""SCPI instrument emulators served on real TCP sockets (asyncio, standard library only).

* :mod:`.scpi`: the parser/dispatcher, error queue and IEEE 488.2 common commands;
* :mod:`.power_supply`: :class:`PowerSupply` (Keysight E36313A-like);
* :mod:`.attenuator`: :class:`OpticalAttenuator` (Keysight N7764A / 8163 style);
* :mod:`.server`: :func:`serve`, :class:`EmulatorThread` and the CLI.
"""

from bench.instruments.emulators.attenuator import OpticalAttenuator, OpticalChannel
from bench.instruments.emulators.power_supply import PowerChannel, PowerSupply
from bench.instruments.emulators.scpi import (
    ERROR_TEXT,
    ErrorQueue,
    SCPIError,
    SCPIInstrument,
    State,
    StateCallback,
)

# The server module is loaded on first use, not here: ``python -m ...emulators.server``
# must not find it already imported (runpy warns about that).
_SERVER_NAMES = ("KINDS", "EmulatorThread", "close_server", "serve")


def __getattr__(name: str) -> object:
    if name in _SERVER_NAMES:
        from bench.instruments.emulators import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ERROR_TEXT",
    "KINDS",
    "EmulatorThread",
    "ErrorQueue",
    "OpticalAttenuator",
    "OpticalChannel",
    "PowerChannel",
    "PowerSupply",
    "SCPIError",
    "SCPIInstrument",
    "State",
    "StateCallback",
    "close_server",
    "serve",
]
