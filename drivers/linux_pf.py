"""The Linux PF driver: a real SR-IOV NIC's physical function, driven over SSH.

It does what an administrator does on a lab server, with the kernel's own interfaces:
``sriov_totalvfs`` / ``sriov_numvfs`` and the ``virtfnN`` links in sysfs, and iproute2's
``ip link set <pf> vf N ...`` for the per-VF settings, read back with ``ip -j -d link
show``. Nothing is assumed to have worked: every change is read back, and a refusal by
the kernel becomes a :class:`PfControlError` naming the host, the PF, the VF, the
setting, the command, its exit status and what the kernel said.

The host is anything with ``name`` and ``run(command, timeout=, check=)`` — the bench's
``SshHost``, whose persistent shell makes each command cost a round trip, not a login.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Protocol

from drivers import linux_pf_commands as cmd
from drivers.pf_control import (
    NO_SUCH_VF,
    NOT_APPLIED,
    NOT_SUPPORTED,
    PfControlError,
    PfState,
    SettingValue,
    VfConfig,
    VfSetting,
)

#: Settings iproute2 can ask of any PF; the NIC's driver may still refuse some (EOPNOTSUPP).
LINUX_SETTINGS = frozenset(VfSetting) - {VfSetting.MTU}


class CommandOutcome(Protocol):
    """A finished command's status and output (the bench's ``CommandResult`` is one)."""

    @property
    def exit_status(self) -> int: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...


class CommandHost(Protocol):
    """What the driver needs of a host: a name and a way to run a shell command on it."""

    @property
    def name(self) -> str: ...

    def run(self, command: str, timeout: float = ..., check: bool = ...) -> CommandOutcome: ...


@dataclass(frozen=True)
class VfDevice:
    """Where a VF is: its PCI function, netdev, bound driver and IOMMU group (None: none)."""

    vf: int
    pci: str
    netdev: str | None
    driver: str | None
    iommu_group: int | None


class LinuxPf:
    """One PF (by PCI address) of a Linux host; implements :class:`drivers.pf_control.PfControl`."""

    def __init__(self, host: CommandHost, pci: str, timeout: float = 30.0) -> None:
        self.host = host
        self.pci = pci
        self.timeout = timeout
        self.name = f"{host.name} PF {pci}"

    # -- plumbing ---------------------------------------------------------------------

    def run(self, command: str, *, action: str, vf: int | None = None, setting: str | None = None,
            timeout: float | None = None) -> str:  # fmt: skip
        """Run ``command``; its stdout, or PfControlError with the kernel's refusal."""
        result = self.host.run(command, timeout=timeout or self.timeout)
        if result.exit_status != 0:
            stderr = result.stderr.strip() or result.stdout.strip() or "(no message)"
            raise PfControlError(
                pf=self.name,
                vf=vf,
                setting=setting,
                action=action,
                reason=cmd.refusal_reason(stderr),
                detail=stderr,
                command=command,
                exit_status=result.exit_status,
            )
        return result.stdout

    def netdev(self) -> str:
        """The PF's network interface (``ip link set <it> vf ...`` addresses the PF by it)."""
        names = self.run(f"ls {cmd.sysfs(self.pci)}/net", action="find the PF's netdev").split()
        if not names:
            raise PfControlError(
                pf=self.name, action="find the PF's netdev", reason=NOT_SUPPORTED,
                detail="the PF has no network interface (no driver bound?)",
            )  # fmt: skip
        return names[0]

    def wait_for_link(self, timeout: float = 10.0) -> None:
        """Wait (on the host, with a deadline) until the PF has carrier: some drivers (igb)
        refuse rate limits while the link is down or still negotiating after a VF change."""
        carrier = shlex.quote(f"/sys/class/net/{self.netdev()}/carrier")
        polls = max(1, int(timeout / 0.05))
        self.run(
            f'i=0; until [ "$(cat {carrier} 2>/dev/null)" = 1 ]; do i=$((i+1)); '
            f'[ $i -ge {polls} ] && {{ echo "no carrier after {timeout:g} s" >&2; exit 1; }}; '
            "sleep 0.05; done",
            action="wait for the PF's link",
            timeout=timeout + 10,
        )

    def _read_int(self, attribute: str) -> int:
        path = f"{cmd.sysfs(self.pci)}/{attribute}"
        text = self.run(f"cat {path}", action=f"read {attribute}").strip()
        return int(text)

    # -- VF count ---------------------------------------------------------------------

    def supported_settings(self) -> frozenset[VfSetting]:
        return LINUX_SETTINGS

    def unsupported_reason(self, setting: VfSetting) -> str:
        if setting is VfSetting.MTU:
            return "a VF's MTU is set on the VF's own netdev (by its user), not by the PF"
        return f"{setting} is supported by iproute2; the NIC's driver decides"

    def total_vfs(self) -> int:
        return self._read_int("sriov_totalvfs")

    def num_vfs(self) -> int:
        return self._read_int("sriov_numvfs")

    def set_num_vfs(self, count: int) -> None:
        """Make ``count`` VFs exist: through 0 when changing (the kernel refuses N -> M
        with EBUSY), then wait until the ``virtfnN`` links are all there."""
        current = self.num_vfs()
        if current == count:
            return
        if current and count:
            self.set_num_vfs(0)
        self.run(
            cmd.write_numvfs(self.pci, count, self.timeout),
            action=f"sriov_numvfs {current} -> {count}",
            setting="sriov_numvfs",
            timeout=self.timeout + 10,
        )

    def vf_devices(self) -> list[VfDevice]:
        """Every VF's PCI address, netdev, driver and IOMMU group, by ``virtfnN``."""
        out = self.run(cmd.list_vfs(self.pci), action="list the VFs")
        devices = []
        for line in out.splitlines():
            index, pci, net, driver, group = line.split()
            devices.append(
                VfDevice(
                    vf=int(index),
                    pci=pci,
                    netdev=None if net == "-" else net,
                    driver=driver or None,
                    iommu_group=int(group) if group.isdigit() else None,
                )
            )
        return sorted(devices, key=lambda d: d.vf)

    def vf_device(self, vf: int) -> VfDevice:
        for device in self.vf_devices():
            if device.vf == vf:
                return device
        raise PfControlError(
            pf=self.name, vf=vf, action="find the VF", reason=NO_SUCH_VF,
            detail=f"no virtfn{vf} (the PF has {self.num_vfs()} VFs)",
        )  # fmt: skip

    def leftovers(self) -> list[str]:
        """What of former VFs is still there with ``sriov_numvfs`` at 0 (empty: nothing)."""
        found = [f"virtfn {d.vf} ({d.pci})" for d in self.vf_devices()]
        found += [f"VF {c.vf} in ip link's vfinfo_list" for c in self.vf_configs()]
        out = self.run(
            'for n in /sys/class/net/*; do [ -e "$n/device/physfn" ] && '
            f'[ "$(readlink -f $n/device/physfn)" = {cmd.sysfs(self.pci)} ] && '
            "echo ${n##*/}; done; true",
            action="look for VF netdevs",
        )
        found += [f"VF netdev {name}" for name in out.split()]
        return found

    # -- per-VF settings --------------------------------------------------------------

    def vf_configs(self) -> list[VfConfig]:
        """Every VF's settings, from ``ip -j -d link show``."""
        out = self.run(f"ip -j -d link show dev {shlex.quote(self.netdev())}",
                       action="read the VF settings")  # fmt: skip
        return cmd.parse_vfinfo(out)

    def vf_config(self, vf: int) -> VfConfig:
        for config in self.vf_configs():
            if config.vf == vf:
                return config
        raise PfControlError(
            pf=self.name, vf=vf, action="read the VF's settings", reason=NO_SUCH_VF,
            detail="ip link lists no such VF",
        )  # fmt: skip

    def set_vf(self, vf: int, setting: VfSetting, value: SettingValue) -> VfConfig:
        """``ip link set <pf> vf <vf> <setting> <value>``, then read back and compare."""
        if setting not in LINUX_SETTINGS:
            raise PfControlError(
                pf=self.name, vf=vf, setting=setting, action=f"set {value}",
                reason=NOT_SUPPORTED, detail=self.unsupported_reason(setting),
            )  # fmt: skip
        configs = {c.vf: c for c in self.vf_configs()}
        current = configs.get(vf, VfConfig(vf=vf))
        command = cmd.set_vf(self.netdev(), vf, setting, value, current)
        try:
            self.run(command, action=f"set {value}", vf=vf, setting=setting)
        except PfControlError as err:
            if vf not in configs:  # the kernel says "Invalid argument"; say which VF is missing
                raise PfControlError(
                    pf=self.name, vf=vf, setting=setting, action=f"set {value}",
                    reason=NO_SUCH_VF, detail=f"the PF has {len(configs)} VFs; {err.detail}",
                    command=command, exit_status=err.exit_status,
                ) from None  # fmt: skip
            raise
        after = self.vf_config(vf)
        wanted = value.lower() if isinstance(value, str) else value
        if after.get(setting) != wanted:
            raise PfControlError(
                pf=self.name, vf=vf, setting=setting, action=f"set {value}",
                reason=NOT_APPLIED, command=command, exit_status=0,
                detail=f"the kernel accepted it but reads back {after.get(setting)!r}",
            )  # fmt: skip
        return after

    def vf_counters(self, vf: int) -> dict[str, int]:
        """The VF's packet and byte counters: its own netdev's while a kernel driver holds
        it, else what the PF reports per VF (``ip -s``). The kernel reports zeros there for
        PF drivers that keep no per-VF counters (igb among them), so it is the fallback."""
        device = self.vf_device(vf)
        if device.netdev is not None:
            out = self.run(
                cmd.read_netdev_counters(device.netdev), action="read VF counters", vf=vf
            )
            return {name: int(value) for name, value in (line.split() for line in out.splitlines())}
        netdev = shlex.quote(self.netdev())
        out = self.run(f"ip -s -j link show dev {netdev}", action="read VF counters", vf=vf)
        stats = cmd.parse_vf_stats(out, vf)
        if stats is None:
            raise PfControlError(
                pf=self.name, vf=vf, action="read VF counters", reason=NOT_SUPPORTED,
                detail=f"the VF has no netdev (driver: {device.driver or 'none'}) and the PF "
                "reports no per-VF counters",
            )  # fmt: skip
        return stats

    # -- state, for the lab's restore -------------------------------------------------

    def snapshot(self) -> PfState:
        """The PF's VF count and every VF's settings, as they are now."""
        return PfState(numvfs=self.num_vfs(), vfs=tuple(self.vf_configs()))

    def restore(self, state: PfState) -> None:
        """Put back ``state``: the VF count, then every setting that differs now."""
        self.set_num_vfs(state.numvfs)
        now = {c.vf: c for c in self.vf_configs()}
        for wanted in state.vfs:
            current = now.get(wanted.vf)
            if current is None:
                continue
            for setting in RESTORE_ORDER:
                value = wanted.get(setting)
                if value is not None and current.get(setting) != value:
                    current = self.set_vf(wanted.vf, setting, value)


#: VLAN before QoS (QoS rides on the VLAN); min rate before max would be refused by some.
RESTORE_ORDER = (
    VfSetting.MAC,
    VfSetting.VLAN,
    VfSetting.QOS,
    VfSetting.SPOOFCHK,
    VfSetting.TRUST,
    VfSetting.LINK_STATE,
    VfSetting.MAX_TX_RATE,
    VfSetting.MIN_TX_RATE,
)


def pf_state_to_json(state: PfState) -> str:
    """``state`` as JSON (kept in the lab's journal directory until ``down``)."""
    return json.dumps({"numvfs": state.numvfs, "vfs": [vars(c) for c in state.vfs]})


def pf_state_from_json(text: str) -> PfState:
    data = json.loads(text)
    return PfState(numvfs=int(data["numvfs"]), vfs=tuple(VfConfig(**c) for c in data["vfs"]))
