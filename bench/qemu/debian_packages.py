"""Debian packages for a guest image: resolved by apt, fetched with ``apt-get download``,
unpacked with ``dpkg-deb -x`` into a staging tree, never installed on this machine.

apt resolves the dependency closure against an empty package database (as if for a
bare system), so the libraries a binary links against come from the packages Debian
says provide them, in the versions the machine's sources carry.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench.errors import LabError

#: ``apt-get`` as root downloads without its ``_apt`` sandbox user (a build dir may be
#: unreadable to it); quiet, and never asking.
_APT = ["apt-get", "-q", "-o", "APT::Sandbox::User=root"]

#: Shared-library packages carry names like ``libssl3`` or ``zlib1g``; perl modules
#: (``lib...-perl``) are not what a binary links against.
_LIBRARY_PACKAGE = re.compile(r"^(lib[a-z0-9.+-]+|zlib1g)$")
_NOT_LIBRARY = re.compile(r"(-perl|^libperl.*|-common|-bin|-modules|-runtime)$")


def _run(argv: Sequence[str], cwd: Path | None = None) -> str:
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(
            f"guest image: `{' '.join(argv)}` failed (exit {done.returncode}): "
            f"{done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


def versioned_kernel_package(meta: str = "linux-image-amd64") -> str:
    """The versioned generic kernel package the metapackage ``meta`` points at now (apt's
    lists are fetched first if this machine has none yet)."""
    try:
        out = _run(["apt-cache", "depends", meta])
    except LabError:
        _run([*_APT, "update"])
        out = _run(["apt-cache", "depends", meta])
    match = re.search(r"Depends:\s*(linux-image-\S+)", out)
    if match is None:
        raise LabError(f"guest image: apt knows no kernel package behind {meta} (apt update?)")
    return match.group(1)


def library_closure(packages: Sequence[str]) -> list[str]:
    """``packages`` plus the shared-library packages they need, as apt would install them
    on an empty system (one consistent choice among alternatives)."""
    out = _run(
        [
            *_APT,
            "-s",
            "-o",
            "Dir::State::Status=/dev/null",
            "install",
            "--no-install-recommends",
            *packages,
        ]
    )
    chosen = [line.split()[1] for line in out.splitlines() if line.startswith("Inst ")]
    libraries = [p for p in chosen if _LIBRARY_PACKAGE.match(p) and not _NOT_LIBRARY.search(p)]
    return sorted({*packages, *libraries})


def package_files(packages: Sequence[str]) -> list[str]:
    """The ``.deb`` file names ``apt-get download`` would fetch (name_version_arch.deb).

    They are what an image's cache key is made of: a new version of any package
    changes its file name, and the image is rebuilt.
    """
    try:
        out = _run([*_APT, "download", "--print-uris", *packages])
    except LabError:  # lists missing or stale on a fresh machine: refresh once
        _run([*_APT, "update"])
        out = _run([*_APT, "download", "--print-uris", *packages])
    return sorted(line.split()[1] for line in out.splitlines() if line.startswith("'"))


def download(packages: Sequence[str], into: Path) -> list[Path]:
    """Fetch ``packages`` into ``into`` (set-up time only); return the ``.deb`` files."""
    into.mkdir(parents=True, exist_ok=True)
    wanted = set(package_files(packages))
    present = {p.name for p in into.glob("*.deb")}
    if not wanted <= present:
        _run([*_APT, "download", *packages], cwd=into)
    for stale in present - wanted:
        (into / stale).unlink()
    return sorted(into / name for name in wanted)


def unpack(debs: Sequence[Path], root: Path) -> None:
    """Unpack every ``.deb`` into the staging tree ``root`` (no maintainer scripts run)."""
    root.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(root)])
