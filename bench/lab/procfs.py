"""What /proc says about a process: its start time and whether it is alive.

A PID alone can be recycled; PID plus kernel start time names one process.
"""

from __future__ import annotations

from pathlib import Path


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name ([] if the process is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    # The command name (field 2) may contain spaces and ')', so split after the last ')'.
    return stat.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int:
    """Kernel start time of ``pid`` in clock ticks (0 if it does not exist)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else 0


def is_alive(pid: int, ticks: int = 0) -> bool:
    """Whether ``pid`` runs (not a zombie) and, if ``ticks`` is given, is that same process."""
    fields = _stat_fields(pid)
    if not fields or fields[0] == "Z":
        return False
    return not ticks or int(fields[19]) == ticks
