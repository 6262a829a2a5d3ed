"""Which host keys the bench trusts for an endpoint.

Trust comes from the endpoint's own known_hosts file only, written by the lab
when it created the host. A key is looked up the way OpenSSH does by default
(``address`` for port 22, ``[address]:port`` otherwise), then under the lab
name of the host, for labs that pin keys by name because addresses get reused;
:mod:`bench.ssh.client_config` emits ``HostKeyAlias`` in exactly that case, so
``ssh`` and the bench always trust the same keys.

Lines are parsed by paramiko, but matched here with OpenSSH's rules rather
than through ``paramiko.HostKeys``, which keeps one key per type and host:
with two pinned ed25519 keys (a key being rotated) it would compare against
the first only and refuse a genuine host. Hashed names, ``*``/``?`` patterns
and ``!`` negations are honoured. Marker lines (``@cert-authority``,
``@revoked``) are skipped: certificates are not supported, and a skipped
revocation can only make the bench trust less.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

from bench.errors import HostError
from bench.ssh.endpoint import SshEndpoint
from bench.ssh.errors import UnknownHostKey

#: Host-key algorithms that prove possession of a key of a given type. RSA keys
#: are filed as ``ssh-rsa`` but negotiated as SHA-2 signature algorithms.
_ALGORITHMS_FOR_KEY_TYPE = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}


@dataclass(frozen=True)
class PinnedKeys:
    """The keys pinned for one endpoint, and the name they are filed under."""

    name: str
    keys: tuple[paramiko.PKey, ...]

    def algorithms(self) -> list[str]:
        """Host-key algorithms able to present one of these keys, in file order."""
        algorithms: list[str] = []
        for key in self.keys:
            for name in _ALGORITHMS_FOR_KEY_TYPE.get(key.get_name(), (key.get_name(),)):
                if name not in algorithms:
                    algorithms.append(name)
        return algorithms

    def accepts(self, key: paramiko.PKey) -> bool:
        """Whether ``key`` is one of the pinned keys."""
        return any(
            pinned.get_name() == key.get_name() and pinned.asbytes() == key.asbytes()
            for pinned in self.keys
        )

    def describe(self) -> str:
        """Type and SHA256 fingerprint of every pinned key, for messages."""
        return ", ".join(f"{key.get_name()} {key.fingerprint}" for key in self.keys)


def _pattern_matches(pattern: str, name: str) -> bool:
    """OpenSSH host pattern match: case-insensitive, ``*`` and ``?`` wildcards."""
    if pattern.startswith("|1|"):
        try:
            return paramiko.HostKeys.hash_host(name, pattern) == pattern
        except (ValueError, AssertionError):
            return False
    regex = re.escape(pattern.lower()).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, name.lower()) is not None


def _names_match(patterns: list[str], name: str) -> bool:
    """Whether a known_hosts line's host list covers ``name`` (a ``!`` match vetoes)."""
    matched = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if _pattern_matches(pattern[1:], name):
                return False
        elif _pattern_matches(pattern, name):
            matched = True
    return matched


def _entries(path: Path) -> list[HostKeyEntry]:
    """The usable lines of a known_hosts file (none if the file does not exist)."""
    if not path.is_file():
        return []
    entries = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "@")):
            continue
        try:
            entry = HostKeyEntry.from_line(line, lineno)
        except (InvalidHostKey, paramiko.SSHException, ValueError):
            continue
        if entry is not None:
            entries.append(entry)
    return entries


def find_pinned_keys(endpoint: SshEndpoint) -> PinnedKeys | None:
    """The keys pinned for ``endpoint``, or None if there are none.

    An unreadable file is an error of its own, not "no key pinned": the fix
    is different.
    """
    try:
        entries = _entries(endpoint.known_hosts)
    except (OSError, UnicodeDecodeError) as exc:
        raise HostError(
            endpoint.host, f"cannot read known_hosts file {endpoint.known_hosts}: {exc}"
        ) from exc
    for name in (endpoint.known_hosts_name, endpoint.host):
        keys = tuple(entry.key for entry in entries if _names_match(entry.hostnames, name))
        if keys:
            return PinnedKeys(name=name, keys=keys)
    return None


def pinned_keys(endpoint: SshEndpoint) -> PinnedKeys:
    """The keys pinned for ``endpoint``; raise :class:`UnknownHostKey` if none."""
    found = find_pinned_keys(endpoint)
    if found is None:
        raise UnknownHostKey(
            endpoint.host,
            endpoint.address,
            endpoint.port,
            endpoint.known_hosts,
            endpoint.known_hosts_name,
        )
    return found
