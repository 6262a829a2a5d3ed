"""The FPGA NIC as its CSR register map sees it (``nic_emulators.csr.regmap.FpgaBoard``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nic_emulators.nic import Nic


class FpgaBoardView:
    def __init__(self, nic: Nic) -> None:
        self.nic = nic

    @property
    def powered(self) -> bool:
        return self.nic.powered

    @property
    def link_up(self) -> bool:
        return self.nic.link_up

    @property
    def vf_count(self) -> int:
        return sum(1 for vf in self.nic.vfs if vf.state != "absent")

    @property
    def vf_total(self) -> int:
        return len(self.nic.vfs)

    def vf_mac(self, vf: int) -> bytes:
        port = self.nic.vfs[vf].port
        if port in self.nic.eswitch.ports():
            return self.nic.eswitch.config(port).mac
        return b"\0" * 6

    def vf_counters(self, vf: int) -> dict[str, int]:
        counters = self.nic.vfs[vf].counters()
        counters["drops"] = counters["rx_no_buffer"] + counters["rx_too_long"]
        return counters

    def set_link(self, up: bool) -> None:
        self.nic.set_link(up)

    def set_vf_count(self, n: int) -> None:
        if n > len(self.nic.vfs):
            raise ValueError(f"{n} VFs asked, the board has {len(self.nic.vfs)}")
        for vf in self.nic.vfs[n:]:
            if vf.state != "absent":
                self.nic.ops.remove({"vf": vf.index})
        for vf in self.nic.vfs[:n]:
            if vf.state == "absent":
                self.nic.ops.restore({"vf": vf.index})

    def reset_vf(self, vf: int) -> None:
        function = self.nic.vfs[vf]
        if function.state not in ("absent", "free"):
            self.nic.ops.remove({"vf": vf})
            self.nic.ops.restore({"vf": vf})
