"""``npabench dump FILE GUEST``: everything a guest's data path says about itself, at once.

Three views that must agree: the vmxnet3 device (the hypervisor's side: mode,
reason, VF, plugin, the last switch sequences), the guest's shell (which path
carries TX, the plugin it loaded, counters per path, buffer accounting, recent
errors) and the NIC (the VF's state, its ring indices and counters). A part
that does not answer is shown as such: a dump is for looking at a broken lab.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import LabError
from nic_emulators.control import ControlClient, ControlError

if TYPE_CHECKING:  # bench.lab pulls scapy: `npabench` imports this module for its parser only
    from bench.lab import Lab

TIMEOUT_S = 3.0


def _call(connect: Callable[..., ControlClient], guest: str, op: str, **args: Any) -> Any:
    with connect(guest, timeout=TIMEOUT_S) as control:
        return control.call(op, **args)


def _ask(what: str, call: Callable[[], Any]) -> dict[str, Any]:
    try:
        answer = call()
    except (LabError, ControlError, OSError, ValueError) as err:
        return {"unreachable": f"{what}: {err}"}
    return answer if isinstance(answer, dict) else {"answer": answer}


def guest_dump(lab: Lab, guest: str) -> dict[str, Any]:
    """The device's, the shell's and the NIC's view of ``guest`` (UsageError if unknown)."""
    host = lab.guest_host(guest)  # an unknown guest is bad input, named with the known ones
    device = _ask("vmxnet3 device", lambda: _call(lab.guest_control, guest, "status"))
    driver = _ask("guest driver", lambda: _call(lab.guest_driver, guest, "status"))
    vf = device.get("vf")
    nic: dict[str, Any] = {}
    if vf is not None:
        nic = _ask("NIC", lambda: _call(lab.guest_nic, guest, "GET_QUEUE_STATUS", vf=vf))
    return {"guest": guest, "host": host, "device": device, "driver": driver, "vf": nic}


def _section(title: str, data: dict[str, Any], keys: list[str]) -> list[str]:
    if "unreachable" in data:
        return [f"{title}: UNREACHABLE ({data['unreachable']})"]
    lines = [f"{title}:"]
    lines += [f"  {key:<14} {_value(data.get(key))}" for key in keys if key in data]
    return lines


def _value(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return "-" if value is None else str(value)


def format_dump(dump: dict[str, Any]) -> str:
    """The dump as a person reads it: mode and why, VF and plugin, rings, counters."""
    device, driver, vf = dump["device"], dump["driver"], dump["vf"]
    lines = [f"guest {dump['guest']} on {dump['host']}"]
    lines += _section(
        "device (hypervisor)",
        device,
        ["mode", "reason", "vf", "plugin", "busy", "suspended", "memory_reserved"],
    )
    lines += _section(
        "driver (guest shell)",
        driver,
        ["tx_path", "plugin", "features", "in_flight", "plugin_fault", "frozen", "vf_release"],
    )
    if "unreachable" not in driver:
        for name, count in sorted(driver.get("counters", {}).items()):
            lines.append(f"  counter {name:<22} {count}")
        lines.append(f"  buffers        {_value(driver.get('buffers'))}")
        lines += [f"  error          {_value(e)}" for e in driver.get("errors", [])]
    if vf:
        lines += _section(f"VF {device.get('vf')} (NIC)", vf, ["state", "owner", "enabled"])
        for q, ring in enumerate(vf.get("queues", [])):
            lines.append(f"  queue {q} rings  {_value(ring)}")
        lines.append(f"  counters       {_value(vf.get('counters'))}")
    else:
        lines.append("VF: none (the guest is in emulation)")
    for entry in device.get("history", [])[-5:]:
        lines.append(f"  switch history: {_value(entry)}")
    return "\n".join(lines)


def _cmd_dump(args: argparse.Namespace) -> int:
    from bench.lab import attach

    with attach(Path(args.topology)) as lab:
        dump = guest_dump(lab, args.guest)
    print(json.dumps(dump, indent=2) if args.json else format_dump(dump))
    return 0


def add_parser(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``npabench dump`` (the caller's ``add(name, help)`` makes a subparser)."""
    p = add(
        "dump",
        "print a guest's data path state: mode and reason, VF, plugin, ring indices, "
        "counters per path, buffer accounting, recent errors and switches",
    )
    p.add_argument("topology", help="topology file (its lab must be up)")
    p.add_argument("guest", help="guest name in the topology")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_dump)
