"""The PF-control interface over a NIC emulator's control socket.

The emulator's eSwitch keeps a configuration per VF *port*, and a VF has a port while a
guest has initialised it (``VF_INIT``); the port's policy is the guest's, so a request
the policy forbids is refused (``EPERM``) exactly as a real hypervisor's port policy
would. What the emulator has no lever for (QoS, trust, per-VF link state, rate limits,
changing the VF count after start) is declared unsupported, so tests skip it with that
reason.
"""

from __future__ import annotations

from typing import Any, Protocol

from drivers.pf_control import (
    BUSY,
    FAILED,
    NO_SUCH_VF,
    NOT_APPLIED,
    NOT_SUPPORTED,
    OUT_OF_RANGE,
    REFUSED,
    PfControlError,
    SettingValue,
    VfConfig,
    VfSetting,
)
from nic_emulators.control import ControlError

#: The emulator's errno-like codes -> the reasons PF control reports.
_REASONS = {
    "EPERM": REFUSED,
    "EINVAL": OUT_OF_RANGE,
    "ERANGE": OUT_OF_RANGE,
    "ENODEV": NO_SUCH_VF,
    "ENOENT": NO_SUCH_VF,
    "EBUSY": BUSY,
    "EOPNOTSUPP": NOT_SUPPORTED,
}

#: Setting -> (control operation, its arguments for a value).
_OPERATIONS: dict[VfSetting, tuple[str, str]] = {
    VfSetting.MAC: ("SET_MAC", "mac"),
    VfSetting.VLAN: ("SET_DEFAULT_VLAN", "vlan"),
    VfSetting.SPOOFCHK: ("SET_ANTISPOOF", "on"),
    VfSetting.MTU: ("SET_MTU", "mtu"),
}


class ControlChannel(Protocol):
    """A NIC emulator's control client (``nic_emulators.control.ControlClient``)."""

    def call(self, op: str, /, timeout: float | None = None, **args: Any) -> dict[str, Any]: ...


class EmulatedPf:
    """A NIC emulator's PF; implements :class:`drivers.pf_control.PfControl`."""

    def __init__(self, control: ControlChannel, name: str) -> None:
        self.control = control
        self.name = name

    def _call(self, op: str, action: str, vf: int | None = None, setting: str | None = None,
              **args: Any) -> dict[str, Any]:  # fmt: skip
        try:
            return self.control.call(op, **args)
        except ControlError as err:
            raise PfControlError(
                pf=self.name, vf=vf, setting=setting, action=action,
                reason=_REASONS.get(err.code, FAILED), detail=f"{err.code}: {err}", command=op,
            ) from None  # fmt: skip

    def supported_settings(self) -> frozenset[VfSetting]:
        return frozenset(_OPERATIONS)

    def unsupported_reason(self, setting: VfSetting) -> str:
        levers = ", ".join(op for op, _ in _OPERATIONS.values())
        return f"the NIC emulator has no per-VF {setting} (its VF port levers: {levers})"

    def _vfs(self) -> list[dict[str, Any]]:
        vfs: list[dict[str, Any]] = self._call("STATUS", "read the NIC's status")["vfs"]
        return vfs

    def total_vfs(self) -> int:
        return len(self._vfs())

    def num_vfs(self) -> int:
        return sum(1 for vf in self._vfs() if vf["state"] != "absent")

    def set_num_vfs(self, count: int) -> None:
        present = self.num_vfs()
        if count != present:
            raise PfControlError(
                pf=self.name, setting="sriov_numvfs", action=f"{present} -> {count} VFs",
                reason=NOT_SUPPORTED,
                detail="the emulator's VFs are made when it starts (the topology's vfs:)",
            )  # fmt: skip

    def vf_config(self, vf: int) -> VfConfig:
        port = self._call("PORT_CONFIG", "read the VF's settings", vf, port=f"vf{vf}")
        return VfConfig(
            vf=vf,
            mac=port["mac"],
            vlan=port["default_vlan"] or 0,
            spoofchk=port["antispoof"],
            mtu=port["mtu"],
        )

    def set_vf(self, vf: int, setting: VfSetting, value: SettingValue) -> VfConfig:
        if setting not in _OPERATIONS:
            raise PfControlError(
                pf=self.name, vf=vf, setting=setting, action=f"set {value}",
                reason=NOT_SUPPORTED, detail=self.unsupported_reason(setting),
            )  # fmt: skip
        op, argument = _OPERATIONS[setting]
        sent: SettingValue | None = None if setting is VfSetting.VLAN and value == 0 else value
        self._call(op, f"set {value}", vf, setting, port=f"vf{vf}", **{argument: sent})
        after = self.vf_config(vf)
        if after.get(setting) != value:
            raise PfControlError(
                pf=self.name, vf=vf, setting=setting, action=f"set {value}", reason=NOT_APPLIED,
                detail=f"accepted, but the port reads back {after.get(setting)!r}", command=op,
            )  # fmt: skip
        return after

    def vf_counters(self, vf: int) -> dict[str, int]:
        counters: dict[str, int] = self._call(
            "PORT_COUNTERS", "read VF counters", vf, port=f"vf{vf}"
        )
        return counters
