"""The shell side of the Linux PF driver: the commands it sends and how their answers read.

Kept apart from :mod:`drivers.linux_pf` so that what runs on the host (sysfs paths,
iproute2 arguments, POSIX shell that also works under busybox) can be read in one place,
and so that parsing ``ip -j -d link show`` and the kernel's refusals is testable without
a host.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from drivers.pf_control import (
    BUSY,
    FAILED,
    NOT_SUPPORTED,
    OUT_OF_RANGE,
    REFUSED,
    SettingValue,
    VfConfig,
    VfSetting,
)

#: The kernel's (and iproute2's) words for a refusal -> the reason the bench reports.
_REFUSALS = (
    ("Operation not supported", NOT_SUPPORTED),
    ("not supported", NOT_SUPPORTED),
    ("Device or resource busy", BUSY),
    ("Numerical result out of range", OUT_OF_RANGE),
    ("Invalid argument", OUT_OF_RANGE),
    ("Invalid", OUT_OF_RANGE),
    ("Operation not permitted", REFUSED),
    ("Permission denied", REFUSED),
)


def refusal_reason(stderr: str) -> str:
    """The reason a failed command's stderr gives, in the bench's words."""
    for words, reason in _REFUSALS:
        if words.lower() in stderr.lower():
            return reason
    return FAILED


def sysfs(pci: str) -> str:
    """The PF's PCI device directory."""
    return f"/sys/bus/pci/devices/{pci}"


def write_numvfs(pci: str, count: int, timeout: float) -> str:
    """Write ``count`` to ``sriov_numvfs`` and wait (on the host, with a deadline) until
    exactly that many ``virtfnN`` links exist; exit 124 with the count seen if not."""
    p = shlex.quote(sysfs(pci))
    polls = max(1, int(timeout / 0.05))
    return (
        f"echo {count} > {p}/sriov_numvfs || exit $?; i=0; "
        f'while :; do set -- {p}/virtfn*; [ -e "$1" ] && n=$# || n=0; '
        f'[ "$n" -eq {count} ] && exit 0; i=$((i+1)); '
        f'[ $i -ge {polls} ] && {{ echo "$n VFs after {timeout:g} s" >&2; exit 124; }}; '
        "sleep 0.05; done"
    )


def list_vfs(pci: str) -> str:
    """One line per VF: index, PCI address, netdev, driver, IOMMU group ('-' for none)."""
    p = shlex.quote(sysfs(pci))
    return (
        f'for v in {p}/virtfn*; do [ -e "$v" ] || continue; d=$(readlink -f "$v"); '
        'net=$(ls "$d/net" 2>/dev/null | head -n1); drv=$(readlink "$d/driver"); '
        'grp=$(readlink "$d/iommu_group"); '
        'echo "${v##*virtfn} ${d##*/} ${net:--} ${drv##*/} ${grp##*/}"; done'
    )


def set_vf(netdev: str, vf: int, setting: VfSetting, value: SettingValue, current: VfConfig) -> str:
    """``ip link set`` for one setting. QoS rides on the port VLAN (iproute2 sets both)."""
    words: list[str]
    if setting is VfSetting.VLAN:
        words = ["vlan", str(value)]
    elif setting is VfSetting.QOS:
        words = ["vlan", str(current.vlan), "qos", str(value)]
    elif isinstance(value, bool):
        words = [setting.value, "on" if value else "off"]
    elif setting is VfSetting.LINK_STATE:
        words = ["state", str(value)]
    else:
        words = [setting.value, str(value)]
    return shlex.join(["ip", "link", "set", "dev", netdev, "vf", str(vf), *words])


def parse_vfinfo(ip_json: str) -> list[VfConfig]:
    """Every VF's configuration from ``ip -j -d link show dev <pf>``."""
    links: list[dict[str, Any]] = json.loads(ip_json)
    return [_config(entry) for entry in links[0].get("vfinfo_list", [])]


def _config(entry: dict[str, Any]) -> VfConfig:
    vlans = entry.get("vlan_list") or [{}]
    rate = entry.get("rate", {})
    return VfConfig(
        vf=int(entry["vf"]),
        mac=str(entry.get("address", "")).lower() or None,
        vlan=int(vlans[0].get("vlan", 0)),
        qos=int(vlans[0].get("qos", 0)),
        spoofchk=entry.get("spoofchk"),
        trust=entry.get("trust"),
        link_state=entry.get("link_state"),
        max_tx_rate=rate.get("max_tx", entry.get("max_tx_rate")),
        min_tx_rate=rate.get("min_tx", entry.get("min_tx_rate")),
    )


def parse_vf_stats(ip_json: str, vf: int) -> dict[str, int] | None:
    """VF ``vf``'s counters from ``ip -s -j link show`` (None: the driver keeps none)."""
    links: list[dict[str, Any]] = json.loads(ip_json)
    for entry in links[0].get("vfinfo_list", []):
        stats = entry.get("stats")
        if int(entry["vf"]) == vf and stats:
            rx, tx = stats.get("rx", {}), stats.get("tx", {})
            # iproute2 6.1 names the TX ones "tx_packets"/"tx_bytes" inside "tx"; later ones not.
            return {
                "rx_packets": int(rx.get("packets", 0)),
                "rx_bytes": int(rx.get("bytes", 0)),
                "tx_packets": int(tx.get("packets", tx.get("tx_packets", 0))),
                "tx_bytes": int(tx.get("bytes", tx.get("tx_bytes", 0))),
            }
    return None


NETDEV_COUNTERS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "rx_dropped", "tx_dropped")


def read_netdev_counters(netdev: str) -> str:
    """``name value`` lines of a netdev's statistics (the VF driver's own counters)."""
    base = shlex.quote(f"/sys/class/net/{netdev}/statistics")
    return f'cd {base} && for c in {" ".join(NETDEV_COUNTERS)}; do echo "$c $(cat $c)"; done'
