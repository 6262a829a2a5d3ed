"""Instrument drivers by topology ``kind:`` -- a new instrument is one new file.

A driver module registers its class with :func:`register`; importing
:mod:`bench.instruments` imports the built-in drivers so the registry is full.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench.errors import UsageError
from bench.instruments.scpi_instrument import ChannelInstrument

_DRIVERS: dict[str, type[ChannelInstrument]] = {}

#: Modules holding the built-in drivers, imported on first lookup.
_BUILTIN = ("bench.instruments.power_supply", "bench.instruments.attenuator")

D = TypeVar("D", bound=type[ChannelInstrument])


def register(kind: str) -> Callable[[D], D]:
    """Class decorator: make the driver available as topology ``kind: <kind>``."""

    def decorate(cls: D) -> D:
        existing = _DRIVERS.get(kind)
        if existing is not None and existing is not cls:
            raise ValueError(f"instrument kind {kind!r} already registered by {existing!r}")
        _DRIVERS[kind] = cls
        cls.kind = kind
        return cls

    return decorate


def kinds() -> list[str]:
    """Every registered instrument kind, sorted."""
    _load_builtin()
    return sorted(_DRIVERS)


def driver_for(kind: str) -> type[ChannelInstrument]:
    """The driver class for topology ``kind:``; a :class:`UsageError` lists the known ones."""
    _load_builtin()
    try:
        return _DRIVERS[kind]
    except KeyError:
        raise UsageError(
            f"unknown instrument kind {kind!r}; known kinds: {', '.join(sorted(_DRIVERS))}"
        ) from None


def open_instrument(
    kind: str,
    resource: str,
    channels: int,
    expected_model: str | None = None,
    log_path: Path | None = None,
    *,
    name: str | None = None,
    timeout_s: float = 5.0,
    lock_dir: Path | None = None,
) -> ChannelInstrument:
    """Open (lock, connect, check ``*IDN?``) the driver for ``kind`` at ``resource``."""
    driver = driver_for(kind)
    instrument = driver(
        resource,
        channels=channels,
        name=name,
        expected_model=expected_model,
        timeout_s=timeout_s,
        log_path=log_path,
        lock_dir=lock_dir,
    )
    return instrument.open()


def _load_builtin() -> None:
    for module in _BUILTIN:
        importlib.import_module(module)
