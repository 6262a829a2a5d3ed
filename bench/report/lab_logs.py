"""Keep the lab daemons' logs with the report before the lab (and its state directory) go.

The NIC emulators, vmxnet3 devices, shells and instrument emulators log into
the lab's state directory, which teardown removes; a failure is often only
explained there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: A log bigger than this is not copied (its path is noted instead).
MAX_BYTES = 64 * 1024 * 1024


def keep_lab_logs(state_dir: Path, destination: Path) -> list[str]:
    """Copy every ``*.log`` under ``state_dir`` to ``destination`` (same relative paths);
    what could not be copied, as messages."""
    problems: list[str] = []
    if not state_dir.is_dir():
        return problems
    for log in sorted(state_dir.rglob("*.log")):
        target = destination / log.relative_to(state_dir)
        try:
            if log.stat().st_size > MAX_BYTES:
                problems.append(f"{log}: larger than {MAX_BYTES} bytes, not copied")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, target)
        except OSError as err:
            problems.append(f"{log}: not copied: {err}")
    return problems
