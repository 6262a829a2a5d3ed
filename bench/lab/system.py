"""Run a command on the controller machine and turn a failure into a clear LabError."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence

from bench.errors import LabError


def run_local(
    argv: Sequence[str], *, input_text: str | None = None, timeout: float = 30.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` here; raise LabError naming the command, its exit status and stderr."""
    shown = shlex.join(argv)
    try:
        done = subprocess.run(
            list(argv),
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise LabError(f"`{shown}`: {argv[0]} is not installed (run `make setup`)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"`{shown}` did not finish within {timeout:g} s; it was stopped") from None
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip() or "no output"
        raise LabError(f"`{shown}` failed with exit status {done.returncode}: {detail}")
    return done


def run_ip_batch(lines: Sequence[str], *, netns: str | None = None) -> None:
    """Run many iproute2 commands in one ``ip -batch`` process (one fork instead of dozens).

    On failure the error names the exact batch line that failed.
    """
    if not lines:
        return
    argv = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
    done = run_local(argv, input_text="\n".join(lines) + "\n", check=False)
    if done.returncode != 0:
        detail = done.stderr.strip()
        failed = _failed_batch_line(detail, lines)
        where = f" in namespace {netns}" if netns else ""
        raise LabError(f"`ip {failed}`{where} failed: {detail}")


def _failed_batch_line(stderr: str, lines: Sequence[str]) -> str:
    # iproute2 reports "Command failed -:N" for batch line N (1-based).
    marker = "Command failed -:"
    if marker in stderr:
        number = stderr.split(marker, 1)[1].split(maxsplit=1)[0]
        if number.isdigit() and 0 < int(number) <= len(lines):
            return lines[int(number) - 1]
    return "-batch"
