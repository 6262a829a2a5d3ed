"""Throwaway network namespaces joined by veths, and the processes run inside them.

Namespaces are named ``npt<hex>-<role>`` (the lab code owns ``npa-``), created
with their veths inside them (nothing is left in the root namespace) and
deleted by ``close`` with every process started through ``spawn`` stopped
first, by PID. IPv6 is off unless a test asks for it, so the only frames on
the wires are the test's own.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.labkit import REPO

AGENT = REPO / "bench" / "traffic" / "agent.py"
READY_TIMEOUT_S = 15.0


def can_run() -> str | None:
    """Why namespace tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, AF_PACKET)"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Process:
    """A process in a namespace; its output lines are collected by reader threads."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.popen = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, False), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self, stream: Any, is_stdout: bool) -> None:
        for line in stream:
            if is_stdout:
                self.stdout.append(line.rstrip("\n"))
                self.lines.put(line.rstrip("\n"))
            else:
                self.stderr.append(line.rstrip("\n"))
        if is_stdout:
            self.lines.put(None)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line == "READY":
                return
            if line is None:
                self.popen.wait()
                raise AssertionError(f"{self.name} exited before READY: {self.diagnostics()}")
        raise AssertionError(f"{self.name}: no READY within {timeout} s: {self.diagnostics()}")

    def result(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the exit and return the JSON line it printed."""
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"{self.name} still running after {timeout} s: {self.diagnostics()}"
            ) from exc
        for thread in self._threads:
            thread.join(timeout=5)
        assert code == 0, f"{self.name} exited {code}: {self.diagnostics()}"
        lines = [line for line in self.stdout if line.startswith("{")]
        assert len(lines) == 1, f"{self.name}: expected one JSON line: {self.diagnostics()}"
        data: dict[str, Any] = json.loads(lines[0])
        return data

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """SIGTERM, then the JSON line."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.result(timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        for thread in self._threads:
            thread.join(timeout=5)

    def diagnostics(self) -> str:
        return f"exit={self.popen.poll()} stdout={self.stdout[-5:]!r} stderr={self.stderr[-15:]!r}"


@dataclass
class Namespaces:
    """Namespaces ``npt<hex>-<role>`` and the processes started in them."""

    roles: tuple[str, ...]
    tag: str = field(default_factory=lambda: "npt" + secrets.token_hex(3))
    created: list[str] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)

    def ns(self, role: str) -> str:
        return f"{self.tag}-{role}"

    def create(self) -> None:
        for role in self.roles:
            name = self.ns(role)
            ip("netns", "add", name)
            self.created.append(name)
            for key in ("all", "default"):
                self.sysctl(role, f"net.ipv6.conf.{key}.disable_ipv6", "1")
            ip("-n", name, "link", "set", "lo", "up")

    def sysctl(self, role: str, key: str, value: str) -> None:
        ip("netns", "exec", self.ns(role), "sysctl", "-qw", f"{key}={value}")

    def veth(self, end1: tuple[str, str, str], end2: tuple[str, str, str]) -> None:
        """A veth pair between two (role, name, MAC) ends, created in place and brought up."""
        (role1, name1, mac1), (role2, name2, mac2) = end1, end2
        ip(
            "-n", self.ns(role1), "link", "add", name1, "address", mac1, "type", "veth",
            "peer", "name", name2, "address", mac2, "netns", self.ns(role2),
        )  # fmt: skip
        ip("-n", self.ns(role1), "link", "set", name1, "up")
        ip("-n", self.ns(role2), "link", "set", name2, "up")

    def spawn(self, role: str, name: str, *argv: str) -> Process:
        proc = Process(name, ["ip", "netns", "exec", self.ns(role), *argv])
        self.processes.append(proc)
        return proc

    def agent(self, role: str, *args: str) -> Process:
        return self.spawn(role, f"agent {args[0]} in {role}", sys.executable, str(AGENT), *args)

    def forwarder(self, *args: str) -> Process:
        return self.spawn("f", "forwarder", sys.executable, "-m", "tests.traffic.forwarder", *args)

    def close(self) -> None:
        """Stop every process by PID, then delete the namespaces (and so their veths)."""
        for proc in self.processes:
            proc.kill()
        errors = []
        for name in reversed(self.created):
            done = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True)
            if done.returncode != 0:
                errors.append(f"{name}: {done.stderr.strip()}")
        self.created.clear()
        if errors:
            raise RuntimeError("could not delete namespaces: " + "; ".join(errors))
