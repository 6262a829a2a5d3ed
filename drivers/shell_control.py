"""The shell's guest-side control (``shell.sock``): what the guest sees of its NIC, and the
levers tests pull on the guest's side (plugin faults, VF release, RX refill, plugins).

Part of ``drivers.shell``.
"""

from __future__ import annotations

from typing import Any

from drivers.faulty_plugin import FAULTS, FaultyPlugin
from drivers.shell_state import ShellState
from nic_emulators.control import Connection, ControlError


class GuestControl(ShellState):
    """``shell.sock``: the guest-side view and the tests' levers."""

    def _handle(
        self, conn: Connection, request_id: int, op: str, args: dict[str, Any]
    ) -> dict[str, Any]:
        del conn, request_id
        if op == "status":
            vf = self.vf
            return {
                "guest": self.config.guest,
                "tap": self.config.tap,
                "tx_path": self.tx_path,
                "plugin": vf.info["plugin"] if vf else None,
                "features": sorted(vf.features) if vf else [],
                "in_flight": vf.in_flight() if vf else 0,
                "counters": self._counters(),
                "buffers": self.memory.audit(),
                "vf_rx_refilling": self.vf_rx_refilling,
                "errors": self.errors[-20:],
                "plugin_fault": self.plugin_fault,
                "frozen": self.frozen,
                "vf_release": self.release_mode,
                "installed": dict(self.installed),
            }
        if op == "plugin-fault":
            fault = args.get("fault")
            if fault is not None and fault not in FAULTS:
                raise ControlError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}", "EINVAL")
            self.plugin_fault = fault
            if self.vf is not None:
                inner = getattr(self.vf.plugin, "inner", self.vf.plugin)
                self.vf.plugin = FaultyPlugin(inner, self.vf.window, fault) if fault else inner
            return {"fault": fault}
        if op == "vf-release":
            mode = str(args.get("mode", "normal"))
            if mode not in ("normal", "delay", "never"):
                raise ControlError(f"vf-release mode {mode!r}? (normal, delay, never)", "EINVAL")
            self.release_mode, self.release_delay_s = mode, float(args.get("delay_ms", 0)) / 1000
            return {"vf_release": mode, "delay_ms": self.release_delay_s * 1000}
        if op == "rx-refill":
            self.rx_refill = bool(args.get("on", True))
            return {"rx_refill": self.rx_refill}
        if op == "install-plugin":
            name, module = str(args["name"]), args.get("module")
            if module:
                self.installed[name] = str(module)
            else:
                self.installed.pop(name, None)
            return {"installed": dict(self.installed)}
        if op == "reload-plugin":
            self.reload_next = True
            self._send_vmx("reload")
            return {"requested": True}
        raise ControlError(f"unknown operation {op!r}", "EINVAL")
