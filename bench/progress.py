"""Progress reporting: long operations report steps through a plain callable."""

from __future__ import annotations

import sys
from collections.abc import Callable

#: Receives one human-readable progress line at a time.
Progress = Callable[[str], None]


def silent(_: str) -> None:
    """A Progress that reports nothing."""


def to_stderr(message: str) -> None:
    """The CLI's Progress: lines on stderr, so stdout stays parseable (``--json``)."""
    print(f"npabench: {message}", file=sys.stderr, flush=True)
