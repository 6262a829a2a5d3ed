"""Helpers for the project's own lab tests: throwaway topologies, the CLI, leftover checks."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import yaml

from bench.lab.naming import link_alias, netns_prefix
from bench.lab.processes import pids_mentioning
from bench.lab.procfs import is_alive
from bench.lab.state import state_root
from nic_emulators.config import lab_shm_files

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


def _routes() -> list[str]:
    out = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True
    )
    return out.stdout.split()


def free_management_subnet() -> str:
    """A /24 in 198.18.0.0/15 that no route of this machine uses yet."""
    used = " ".join(_routes())
    for _ in range(200):
        third = secrets.randbelow(250) + 3
        if f"198.18.{third}." not in used:
            return f"198.18.{third}.0/24"
    raise RuntimeError("no free management subnet in 198.18.0.0/16")


def write_topology(
    directory: Path,
    hosts: int = 3,
    lab: str | None = None,
    instruments: Sequence[dict[str, object]] = (),
    *,
    nics: Mapping[str, Sequence[dict[str, object]]] | None = None,
    guests: int = 0,
    guest_host: str = "h1",
) -> tuple[Path, str]:
    """A valid emulated topology with ``hosts`` hosts on one switch; returns (path, lab name).

    Host ``h0`` is the traffic generator, the others hypervisors. ``nics`` maps a
    host name to its ``nics:`` list; ``guests`` guests ``vm1``... run on ``guest_host``,
    with addresses ``.101``... on the data switch.
    """
    name = lab or "t" + secrets.token_hex(2)
    data_third = secrets.randbelow(250) + 3
    host_docs: list[dict[str, object]] = [
        {
            "name": f"h{i}",
            "role": "hypervisor" if i else "traffic-generator",
            "interfaces": [
                {
                    "name": "uplink0",
                    "switch": "sw0",
                    "address": f"198.19.{data_third}.{10 + i}/24",
                    "mac": f"02:4e:51:{data_third:02x}:00:{10 + i:02x}",
                }
            ],
        }
        for i in range(hosts)
    ]
    for host in host_docs:
        if nics and host["name"] in nics:
            host["nics"] = list(nics[str(host["name"])])
    doc: dict[str, object] = {
        "lab": {"name": name, "management": free_management_subnet()},
        "switches": [{"name": "sw0", "subnet": f"198.19.{data_third}.0/24"}],
        "hosts": host_docs,
        "limits": {"lab_up_timeout_s": 60},
    }
    if instruments:
        doc["instruments"] = list(instruments)
    if guests:
        doc["guests"] = [
            {
                "name": f"vm{g}",
                "host": guest_host,
                "mac": f"02:4e:52:{data_third:02x}:01:{g:02x}",
                "address": f"198.19.{data_third}.{100 + g}/24",
            }
            for g in range(1, guests + 1)
        ]
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, name


def npabench(
    *args: str, timeout: float = 120, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI as a user would (a separate process)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"npabench {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done


def wait_for(condition: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ('' if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    return is_alive(pid)


def leftovers(lab: str, pids: Sequence[int] = ()) -> list[str]:
    """Everything of ``lab`` still on this machine: namespaces, links, state, processes."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [
        f"namespace {n.split()[0]}" for n in netns.splitlines() if n.startswith(netns_prefix(lab))
    ]
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)
    found += [f"link {link['ifname']}" for link in links if link.get("ifalias") == link_alias(lab)]
    found += [f"link {link['ifname']}" for link in links if link["ifname"].startswith(f"{lab}-")]
    if (state_root() / lab).exists():
        found.append(f"state directory {state_root() / lab}")
    found += [f"process {pid}" for pid in pids if pid_alive(pid)]
    # Any daemon started for the lab (journalled or not) names its state directory.
    found += [f"process {pid}" for pid in pids_mentioning(f"{state_root() / lab}/")]
    found += [f"shared memory {path}" for path in lab_shm_files(lab)]
    return found


def recorded_pids(lab: str) -> list[int]:
    """PIDs of the processes the lab journal records (read while the lab is up)."""
    state = json.loads((state_root() / lab / "state.json").read_text())
    return [r["pid"] for r in state["resources"] if r["kind"] == "process"]
