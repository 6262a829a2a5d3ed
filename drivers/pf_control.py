"""One PF-control interface for real and emulated SR-IOV NICs.

What a hypervisor's administrator does to a NIC's physical function — how many VFs
exist, and per VF its MAC, port VLAN and priority, spoof checking, trust, link state,
rate limits, MTU — is the same job whether the PF is a real NIC driven through Linux
(``linux_pf.LinuxPf``: sysfs and iproute2 over SSH) or a NIC emulator (``emulated_pf``:
its control socket). Conformance tests take a :class:`PfControl` and never ask which;
each implementation declares the settings it can apply at all, and a refusal of a
setting the NIC turns out not to support says so (``reason == NOT_SUPPORTED``), so a
test skips it with the reason instead of passing it.

Every setting is verified by reading it back; a read-back that differs is an error of
its own (:data:`NOT_APPLIED`), never a silent success.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class VfSetting(StrEnum):
    """A per-VF setting the PF applies (``ip link set <pf> vf N <setting> ...``)."""

    MAC = "mac"
    VLAN = "vlan"
    QOS = "qos"
    SPOOFCHK = "spoofchk"
    TRUST = "trust"
    LINK_STATE = "link_state"
    MAX_TX_RATE = "max_tx_rate"
    MIN_TX_RATE = "min_tx_rate"
    MTU = "mtu"


#: Values a setting takes: a MAC text, a number (VLAN, QoS, rate, MTU), a flag, a link state.
SettingValue = str | int | bool

#: Why a request was refused (``PfControlError.reason``).
BUSY = "busy"
OUT_OF_RANGE = "out of range"
NOT_SUPPORTED = "not supported"
REFUSED = "refused"
NOT_APPLIED = "not applied"
NO_SUCH_VF = "no such VF"
FAILED = "failed"


@dataclass(frozen=True)
class VfConfig:
    """A VF's settings as the PF reports them (None: the NIC does not report it)."""

    vf: int
    mac: str | None = None
    vlan: int = 0
    qos: int = 0
    spoofchk: bool | None = None
    trust: bool | None = None
    link_state: str | None = None
    max_tx_rate: int | None = None
    min_tx_rate: int | None = None
    mtu: int | None = None

    def get(self, setting: VfSetting) -> SettingValue | None:
        """The value of ``setting`` in this configuration."""
        value: SettingValue | None = getattr(self, setting.value)
        return value

    def with_value(self, setting: VfSetting, value: SettingValue) -> VfConfig:
        """This configuration with ``setting`` changed (what a read-back should show)."""
        changes: dict[str, Any] = {setting.value: value}
        return replace(self, **changes)


@dataclass(frozen=True)
class PfState:
    """What a PF had: its VF count and each VF's settings (restored at ``down``)."""

    numvfs: int
    vfs: tuple[VfConfig, ...] = field(default=())


class PfControlError(Exception):
    """The NIC refused or failed a PF request; says where, what, and what the NIC said.

    ``reason`` is one of the module's reason constants; ``command``, ``exit_status`` and
    ``detail`` are the command (or control operation) and the answer that refused it.
    """

    def __init__(
        self,
        *,
        pf: str,
        action: str,
        reason: str,
        detail: str,
        vf: int | None = None,
        setting: str | None = None,
        command: str = "",
        exit_status: int | None = None,
    ) -> None:
        where = pf if vf is None else f"{pf} VF {vf}"
        what = f"{setting}: {action}" if setting else action
        how = f" (`{command}` exited {exit_status})" if command and exit_status is not None else ""
        super().__init__(f"{where}: {what} refused, {reason}{how}: {detail}")
        self.pf, self.vf, self.setting, self.action = pf, vf, setting, action
        self.reason, self.detail = reason, detail
        self.command, self.exit_status = command, exit_status


@runtime_checkable
class PfControl(Protocol):
    """The administrator's view of one SR-IOV physical function."""

    #: Where the PF is, for messages: ``<host> PF <pci or nic>``.
    name: str

    def supported_settings(self) -> frozenset[VfSetting]:
        """Settings this kind of PF can apply at all (others are refused as not supported)."""
        ...

    def unsupported_reason(self, setting: VfSetting) -> str:
        """Why ``setting`` is not in :meth:`supported_settings` (for a test's skip)."""
        ...

    def total_vfs(self) -> int:
        """How many VFs the PF can have."""
        ...

    def num_vfs(self) -> int:
        """How many VFs exist now."""
        ...

    def set_num_vfs(self, count: int) -> None:
        """Make exactly ``count`` VFs exist (waits until they do)."""
        ...

    def vf_config(self, vf: int) -> VfConfig:
        """VF ``vf``'s settings as the PF reports them now."""
        ...

    def set_vf(self, vf: int, setting: VfSetting, value: SettingValue) -> VfConfig:
        """Apply one setting, read it back, and return the VF's configuration.

        Raises :class:`PfControlError` if the NIC refuses it or the read-back differs.
        """
        ...

    def vf_counters(self, vf: int) -> dict[str, int]:
        """VF ``vf``'s packet and byte counters (totals), as the NIC keeps them."""
        ...
