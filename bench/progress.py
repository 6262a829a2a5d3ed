"""Progress reporting: long operations report steps through a plain callable."""

from __future__ import annotations

from collections.abc import Callable

#: Receives one human-readable progress line at a time.
Progress = Callable[[str], None]


def silent(_: str) -> None:
    """A Progress that reports nothing."""
