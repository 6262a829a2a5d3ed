"""Where and as whom the bench reaches one lab host over SSH."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.ssh.errors import address_port


@dataclass(frozen=True, kw_only=True)
class SshEndpoint:
    """Everything needed to open an authenticated, verified SSH connection.

    ``host`` is the host's name in the lab (used in messages and logs, never
    resolved); ``address`` is what the bench connects to. Fields are
    keyword-only: six positional values of which two are paths invite mix-ups. ``known_hosts`` is
    the only source of trusted host keys: the user's ``~/.ssh/known_hosts`` is
    deliberately never consulted, so a lab's trust does not leak into another.
    """

    host: str
    address: str
    port: int = 22
    user: str = "root"
    key_file: Path
    known_hosts: Path

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH files this endpoint's key under in known_hosts."""
        if self.port == 22:
            return self.address
        return f"[{self.address}]:{self.port}"

    @property
    def display_address(self) -> str:
        """``address:port`` for messages (IPv6 addresses bracketed)."""
        return address_port(self.address, self.port)
