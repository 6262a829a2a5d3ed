"""TX fences: a VF's TX rings wait for the end of its owner's emulation traffic.

On a switch to passthrough the guest's TX moves to the VF at once, while its
last frames over emulation may still be on their way to the NIC (the vmxnet3
device forwards them through the owner's vport). VF_ACTIVATE with
``tx_fence`` arms a fence: the NIC takes nothing from the VF's TX rings until
the shell's fence marker has come through the vport (an empty datagram,
``vmxnet3.layout.TX_FLAG_FENCE``), after every frame the guest sent before
it. The guest keeps posting on the VF meanwhile, so a switch holds none of
its frames back; the order on the wire is the order the guest sent in.

A fence that never comes (a device gone mid-switch) is given up after
``WAIT_S``: the VF then sends, and the give-up is counted.
"""

from __future__ import annotations

import time

#: Longest a VF's TX waits for its fence (a lost one: far longer than the
#: milliseconds a fence takes through a loaded vmxnet3 device).
WAIT_S = 0.2


class TxFences:
    """The VFs whose TX waits for a fence: VF index -> (owner, deadline)."""

    def __init__(self, wait_s: float = WAIT_S) -> None:
        self.wait_s = wait_s
        self.armed: dict[int, tuple[str, float]] = {}
        self.passed = 0
        self.timed_out = 0

    def arm(self, vf: int, owner: str) -> None:
        self.armed[vf] = (owner, time.monotonic() + self.wait_s)

    def clear(self, vf: int) -> None:
        """The VF left the data path: nothing waits any more."""
        self.armed.pop(vf, None)

    def arrived(self, owner: str) -> None:
        """The fence came through ``owner``'s vport: that owner's VFs send from now on."""
        for vf, (armed_for, _) in list(self.armed.items()):
            if armed_for == owner:
                del self.armed[vf]
                self.passed += 1

    def holds(self, vf: int) -> bool:
        """Whether VF ``vf``'s TX must wait still (a fence past its deadline is given up)."""
        if not self.armed:
            return False
        entry = self.armed.get(vf)
        if entry is None:
            return False
        if time.monotonic() < entry[1]:
            return True
        del self.armed[vf]
        self.timed_out += 1
        return False

    def wake_in(self, longest: float) -> float:
        """How long an idle loop may sleep: at most until the first deadline."""
        if not self.armed:
            return longest
        first = min(deadline for _, deadline in self.armed.values())
        return max(0.0, min(longest, first - time.monotonic()))

    def describe(self) -> dict[str, int]:
        return {"waiting": len(self.armed), "passed": self.passed, "timed_out": self.timed_out}
