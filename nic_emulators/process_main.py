"""The ``main`` every data-path process shares: read the config, run until SIGTERM/SIGINT, clean up.

A process class takes its config, has ``run()`` (a loop that ends when its
``stopping`` flag is set) and ``close()`` (which runs whatever ended the loop).
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from nic_emulators.config import read_config

C = TypeVar("C")


class DataPathProcess(Protocol):
    stopping: bool

    def run(self) -> None: ...
    def close(self) -> None: ...


def serve(
    prog: str,
    description: str | None,
    config_class: type[C],
    make: Callable[[C], Any],
    argv: Sequence[str] | None = None,
) -> int:
    """``python -m PROG --config FILE``: build the process from the config and run it."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--config", required=True, type=Path, help=f"{config_class.__name__} JSON file"
    )
    args = parser.parse_args(argv)
    process: DataPathProcess = make(read_config(config_class, args.config))

    def stop(*_: object) -> None:
        process.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        process.run()
    finally:
        process.close()
    return 0
