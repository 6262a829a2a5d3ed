"""The vmxnet3 device model of one guest: it decides where the guest's data path runs.

Passthrough needs a VF from the host's NIC; the device takes the guest there
and back with the VF operations and the shell's co-operation (ARCHITECTURE.md):

* emulation -> passthrough: ACQUIRE, GET_INFO, INIT, shell ``attach`` (plugin
  loaded, RX buffers posted), ACTIVATE, shell ``go`` (TX moves to the VF).
  A failure is rolled back: after ACQUIRE/INIT by RELEASE, after ACTIVATE by
  QUIESCE + shell ``detach`` + RELEASE; the guest stays in emulation with the reason.
* passthrough -> emulation: QUIESCE (the NIC finishes what was posted and
  steers the guest's MAC to its vport), shell ``detach``, SAVE_STATE, RELEASE.
* a VF that faults, vanishes or is powered off: shell ``vf-lost`` (no drain),
  then emulation with the reason; a VF that comes back is taken again.

Sequences are generators: each ``yield`` waits for the shell's answer to one
step, or for the NIC's reply to a VF operation (``nic_step``), so the process
keeps moving the emulation path's frames while a switch is in progress. (A
blocking call to the NIC stopped them: 1-3 ms per switch to passthrough.)
QUIESCE and the rollbacks stay blocking calls: QUIESCE decides where the
guest's received frames go, and its answer must come before any frame the
vport takes after it. Every
step that changes where the guest's data path runs is reported through
``on_event`` (``vf-quiesced``, ``emulation-active``, ``plugin-loaded``,
``passthrough-active``, ``rollback``...), timestamped by the process: the
hypervisor's event stream that timelines are drawn from.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator
from typing import Any, NoReturn

from nic_emulators.config import VmxConfig
from nic_emulators.control import ControlClient, ControlError

#: What a sequence yields: (shell event name, details); it is resumed with the shell's answer.
Step = tuple[str, dict[str, Any]]
Sequence = Generator[Step, dict[str, Any], None]
#: The step that asks the NIC for a VF operation (details: op, args); resumed with its reply.
NIC_STEP = "nic"
#: Sends a NIC request without waiting: ``ask_nic(seq, op, args)``; the reply comes back
#: through ``DeviceModel.shell_answer(seq, reply)``, the NIC's reply message as it is.
AskNic = Callable[[int, str, dict[str, Any]], None]

STEP_TIMEOUT_S = 5.0


class SwitchFailed(Exception):
    pass


def fail(reason: str) -> NoReturn:
    raise SwitchFailed(reason)


class DeviceModel:
    """Modes, reasons and the switch sequences of one guest's vmxnet3 device."""

    def __init__(
        self, config: VmxConfig, tell_shell: Callable[[str, dict[str, Any]], None]
    ) -> None:
        self.config = config
        self.tell_shell = tell_shell
        #: The NIC: blocking calls (``nic_op``), and requests not waited on (``nic_step``),
        #: both set by the process when its host has an SR-IOV NIC.
        self.nic: ControlClient | None = None
        self.ask_nic: AskNic | None = None
        self.mode = "emulation"
        self.reason = "starting"
        self.vf: int | None = None
        #: The VF was quiesced on the way to emulation and not yet released.
        self.vf_quiesced = False
        self.info: dict[str, Any] | None = None
        self.saved: dict[str, Any] | None = None
        self.suspended = False
        self.memory_reserved = config.memory_reserved
        self.required_features: frozenset[str] = frozenset()
        self.fail_after_activate = False
        self.memory_name = ""
        self.sequence: Sequence | None = None
        self.sequence_name = ""
        self.waiting_for: tuple[int, float, float] | None = None
        #: The shell step the running sequence waits on (its name), if any.
        self.waiting_event = ""
        self.on_done: list[Callable[[dict[str, Any] | None, str | None], None]] = []
        self.steps: list[str] = []
        self.started_at = 0.0
        self.next_seq = 1
        self.history: list[dict[str, Any]] = []
        #: Where events go: ``on_event(name, details)`` (the process timestamps them).
        self.on_event: Callable[[str, dict[str, Any]], None] = lambda name, details: None
        #: The next step's answer deadline, when it is not STEP_TIMEOUT_S (a migration
        #: waits ``vf_release_timeout_s`` for the guest to let go of its VF).
        self.next_step_timeout_s: float | None = None
        #: Extra VF_INIT arguments: the port configuration and policy when the guest has
        #: no vport on the NIC to copy them from (its emulation uses a vSwitch uplink).
        self.init_args: dict[str, Any] = {}

    # -- reasons --------------------------------------------------------------

    def inactive_reason(self) -> str | None:
        """Why passthrough cannot be active now (vSphere's vocabulary), or None."""
        if self.config.mode != "npa":
            return "guest has no plugin support (emulation only)"
        if not self.config.nic_control:
            return "no SR-IOV NIC on this host"
        if self.suspended:
            return "guest suspended"
        if not self.memory_reserved:
            return "no full memory reservation"
        if not self.memory_name:
            return "guest driver not loaded"
        return None

    # -- running sequences ----------------------------------------------------

    def start(
        self,
        name: str,
        sequence: Sequence,
        done: Callable[[dict[str, Any] | None, str | None], None] | None = None,
    ) -> None:
        if self.sequence is not None:
            raise ControlError(f"a {self.sequence_name} is in progress", "EBUSY")
        self.sequence, self.sequence_name = sequence, name
        self.steps, self.started_at = [], time.monotonic()
        self.on_done = [done] if done else []
        self._advance(None)

    def _advance(self, answer: dict[str, Any] | None, error: SwitchFailed | None = None) -> None:
        """Run the sequence to its next step: with the shell's ``answer`` to the last one,
        or with ``error`` raised where it waits."""
        assert self.sequence is not None
        try:
            if error is not None:
                event, details = self.sequence.throw(error)
            elif answer is not None:
                event, details = self.sequence.send(answer)
            else:
                event, details = next(self.sequence)
        except StopIteration:
            self._finish(None)
            return
        except (SwitchFailed, ControlError) as err:
            self._finish(str(err))
            return
        self._send_step(event, details)

    def _send_step(self, event: str, details: dict[str, Any]) -> None:
        seq = self.next_seq
        self.next_seq += 1
        timeout = self.next_step_timeout_s or STEP_TIMEOUT_S
        self.next_step_timeout_s = None
        self.waiting_for = (seq, time.monotonic() + timeout, timeout)
        self.waiting_event = event
        if event == NIC_STEP:
            assert self.ask_nic is not None  # nic_step yields none without it
            self.ask_nic(seq, details["op"], details["args"])
            return
        self.steps.append(f"shell {event}")
        self.tell_shell(event, {"seq": seq, **details})

    def shell_answer(self, seq: int, answer: dict[str, Any]) -> None:
        if self.waiting_for is None or self.waiting_for[0] != seq:
            # a late answer to a step that timed out (logged: it explains a timeout)
            self.on_event("late-answer", {"seq": seq, "waiting": self.waiting_for is not None})
            return
        self.waiting_for = None
        self._advance(answer)

    def check_timeouts(self) -> None:
        if self.waiting_for is not None and time.monotonic() > self.waiting_for[1]:
            self.interrupt(
                SwitchFailed(f"the guest did not answer within {self.waiting_for[2]:g} s")
            )

    def interrupt(self, error: SwitchFailed) -> None:
        """Raise ``error`` inside the running sequence at the step it waits on (a timeout,
        a cancelled migration); the sequence rolls back as it does on any failure."""
        if self.sequence is None or self.waiting_for is None:
            return
        self.waiting_for = None
        self._advance(None, error)

    def _finish(self, error: str | None) -> None:
        took_ms = (time.monotonic() - self.started_at) * 1000
        result = {
            "mode": self.mode,
            "reason": self.reason,
            "took_ms": round(took_ms, 3),
            "steps": self.steps,
        }
        self.history.append({"sequence": self.sequence_name, "error": error, **result})
        if error:
            self.on_event("sequence-failed", {"sequence": self.sequence_name, "reason": error})
        self.sequence, self.waiting_for = None, None
        callbacks, self.on_done = self.on_done, []
        for callback in callbacks:
            callback(result, error)

    # -- NIC operations -------------------------------------------------------

    def nic_op(self, op: str, **args: Any) -> dict[str, Any]:
        if self.nic is None:
            raise SwitchFailed("no SR-IOV NIC on this host")
        self.steps.append(op)
        return self.nic.call(op, **args)

    def nic_step(self, op: str, **args: Any) -> Generator[Step, dict[str, Any], dict[str, Any]]:
        """``nic_op`` without stopping the process (``yield from``): the NIC's result, or
        ControlError as ``nic_op`` raises it."""
        if self.ask_nic is None:
            raise SwitchFailed("no SR-IOV NIC on this host")
        self.steps.append(op)
        reply = yield (NIC_STEP, {"op": op, "args": args})
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error")), str(reply.get("code", "EIO")))
        result: dict[str, Any] = reply.get("result") or {}
        return result

    # -- the sequences --------------------------------------------------------

    def to_passthrough(self) -> Sequence:
        reason = self.inactive_reason()
        if reason:
            self.reason = reason
            raise SwitchFailed(f"passthrough inactive: {reason}")
        try:
            acquired = yield from self.nic_step("VF_ACQUIRE", owner=self.config.guest)
        except ControlError as err:
            self.reason = "out of interrupt vectors" if err.code == "ENOSPC" else f"no VF: {err}"
            raise SwitchFailed(self.reason) from err
        vf = int(acquired["vf"])
        self.vf = vf
        self.on_event("vf-acquired", {"vf": vf, "nic": self.config.nic_control})
        try:
            info = yield from self.nic_step("VF_GET_INFO", vf=vf)
            self._check_features(frozenset(info["features"]))
            yield from self.nic_step("VF_INIT", vf=vf, memory=self.memory_name, **self.init_args)
            answer = yield ("attach", {"info": info})
            if not answer.get("ok"):
                fail(f"the guest refused the VF: {answer.get('reason')}")
            self.on_event("plugin-loaded", {"vf": vf, "plugin": info.get("plugin")})
        except Exception as err:
            self._undo(vf, activated=False)
            self.reason = (
                str(err) if isinstance(err, (SwitchFailed, ControlError)) else "switch failed"
            )
            raise
        try:
            # The NIC takes nothing from the VF's TX rings before the guest's TX fence
            # has come through its vport: the guest's last emulated frames go first.
            yield from self.nic_step("VF_ACTIVATE", vf=vf, tx_fence=True)
            if self.fail_after_activate:
                self.fail_after_activate = False
                fail("failure injected after VF_ACTIVATE")
            answer = yield ("go", {})
            if not answer.get("ok"):
                fail(f"the guest could not move TX to the VF: {answer.get('reason')}")
        except Exception as err:
            self.steps.append("rollback")
            self.on_event("rollback", {"vf": vf, "reason": str(err)})
            with contextlib.suppress(ControlError):  # steer back to the vport before the guest
                self.nic_op("VF_QUIESCE", vf=vf)  # lets go of the VF, as to_emulation does
            with_detach = yield ("detach", {"reason": "rollback"})
            del with_detach
            self._undo(vf, activated=False)
            self.reason = (
                str(err) if isinstance(err, (SwitchFailed, ControlError)) else "switch failed"
            )
            raise
        self.info = info
        self.mode, self.reason = "passthrough", ""
        self.on_event("passthrough-active", {"vf": vf, "plugin": info.get("plugin")})

    def _check_features(self, features: frozenset[str]) -> None:
        """Never enable what the VF lacks; a VF with no usable capability is no VF."""
        lacking = self.required_features - features
        if lacking:
            fail(f"incompatible adapter features: the VF lacks {', '.join(sorted(lacking))}")
        if not features & {"csum", "vlan", "tso", "rss", "lro"}:
            fail("the VF reports no usable capability")

    def _undo(self, vf: int, activated: bool) -> None:
        """Roll a failed switch back: QUIESCE what was activated, RELEASE what was acquired."""
        if activated:
            with contextlib.suppress(ControlError):
                self.nic_op("VF_QUIESCE", vf=vf)
        with contextlib.suppress(ControlError):
            self.nic_op("VF_RELEASE", vf=vf)
        self.vf = None

    def to_emulation(self, reason: str) -> Sequence:
        vf = self.vf
        if self.mode != "passthrough" or vf is None:
            self.reason = reason or self.reason
            return
        yield ("hold", {})
        self.nic_op("VF_QUIESCE", vf=vf)
        self.vf_quiesced = True
        self.on_event("vf-quiesced", {"vf": vf, "reason": reason})
        answer = yield ("detach", {"reason": reason})
        self.mode, self.reason = "emulation", reason
        self.on_event("emulation-active", {"reason": reason})
        if not answer.get("ok"):
            self.steps.append(f"guest: {answer.get('reason')}")
        try:
            self.saved = yield from self.nic_step("VF_SAVE_STATE", vf=vf)
        except BaseException:
            try:  # let go of the VF all the same
                self.nic_op("VF_RELEASE", vf=vf)
            finally:
                self._released(vf)
            raise
        try:
            yield from self.nic_step("VF_RELEASE", vf=vf)
        finally:
            self._released(vf)

    def _released(self, vf: int) -> None:
        self.vf, self.info, self.vf_quiesced = None, None, False
        self.on_event("vf-released", {"vf": vf})

    def vf_lost(self, reason: str, release: bool, drained: bool = False, left: int = 0) -> Sequence:
        """The VF is gone or broken: the shell drops it at once, no handshake; ``drained``:
        it was quiesced first, so what the guest had posted did go out, but for the last
        ``left`` frames, which the device could not take (they go over emulation)."""
        vf = self.vf
        self.mode, self.reason = "emulation", reason
        self.on_event("vf-lost", {"vf": vf, "reason": reason})
        yield ("vf-lost", {"reason": reason, "drained": drained, "left": left})
        self.on_event("emulation-active", {"reason": reason})
        if release and vf is not None:
            try:
                self.nic_op("VF_RELEASE", vf=vf)
            except ControlError as err:
                self.steps.append(f"VF_RELEASE failed: {err}")
        self.vf, self.info = None, None

    def status(self) -> dict[str, Any]:
        return {
            "guest": self.config.guest,
            "host": self.config.host,
            "mode": self.mode,
            "reason": self.reason,
            "vf": self.vf,
            "plugin": self.info["plugin"] if self.info else None,
            "nic": self.config.nic_control or None,
            "busy": self.sequence_name if self.sequence is not None else None,
            "suspended": self.suspended,
            "memory_reserved": self.memory_reserved,
            "history": self.history[-20:],
        }
