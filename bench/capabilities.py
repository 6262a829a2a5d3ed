"""Capabilities a test may ``require``, and which of them this bench can provide today.

A topology *declares* capabilities (``Topology.capabilities()``); a lab *provides*
only those whose kind every backend it uses can realise. A kind is the part
before ``:`` (``hosts:3`` -> ``hosts``; ``guests`` -> ``guests``). When a backend
learns to realise a kind (SR-IOV NICs, guests, instruments), add it to that
backend's line of ``REALISED``.
"""

from __future__ import annotations

import re
from typing import get_args

from bench.topology import Host, Instrument, Topology
from bench.topology.model import QEMU_PRIMARY_MODELS
from nic_emulators.models import MODEL_NAMES

#: Backend -> the capability kinds it realises today. One line per backend.
REALISED: dict[str, frozenset[str]] = {
    "emulated": frozenset(
        {"hosts", "backend", "hypervisor", "role", "instrument", "nic", "guests"}
    ),
    "lab": frozenset({"hosts", "backend", "hypervisor", "role", "instrument"}),
}

_BACKENDS: tuple[str, ...] = get_args(Host.model_fields["backend"].annotation)
_HYPERVISORS: tuple[str, ...] = get_args(Host.model_fields["hypervisor"].annotation)
_ROLES: tuple[str, ...] = get_args(Host.model_fields["role"].annotation)
_INSTRUMENTS: tuple[str, ...] = get_args(Instrument.model_fields["kind"].annotation)

#: Every capability form a ``requires`` marker may name.
KNOWN_FORMS = (
    "hosts:N",
    "backend:" + "|".join(_BACKENDS),
    "hypervisor:" + "|".join(_HYPERVISORS),
    "role:" + "|".join(_ROLES),
    "instrument:" + "|".join(_INSTRUMENTS),
    "nic:sriov",
    "nic:" + "|".join(MODEL_NAMES),
    "guests",
    "guests:N",
)


def kind(capability: str) -> str:
    """The kind of ``capability``: the part before ``:``."""
    return capability.partition(":")[0]


def is_known(capability: object) -> bool:
    """Whether ``capability`` is one of ``KNOWN_FORMS`` (a typo would otherwise just skip)."""
    if not isinstance(capability, str):
        return False
    if capability == "guests":
        return True
    what, sep, value = capability.partition(":")
    if not sep:
        return False
    if what in ("hosts", "guests"):
        return re.fullmatch(r"[1-9][0-9]*", value) is not None
    allowed = {
        "backend": _BACKENDS,
        "role": _ROLES,
        "instrument": _INSTRUMENTS,
        "hypervisor": _HYPERVISORS,
        "nic": ("sriov", *MODEL_NAMES, *QEMU_PRIMARY_MODELS),
    }
    return value in allowed.get(what, ())


def provided_capabilities(topology: Topology) -> frozenset[str]:
    """The declared capabilities of ``topology`` that every backend it uses can realise."""
    backends = {h.backend for h in topology.hosts}
    kinds = frozenset.intersection(*(REALISED.get(b, frozenset()) for b in backends))
    return frozenset(c for c in topology.capabilities() if kind(c) in kinds)


def unmet(topology: Topology, required: tuple[str, ...] | list[str]) -> str | None:
    """Why a test requiring ``required`` cannot run on ``topology``, or None if it can."""
    declared = topology.capabilities()
    provided = provided_capabilities(topology)
    lacking = [c for c in required if c not in declared]
    unprovided = [c for c in required if c in declared and c not in provided]
    lab = topology.lab.name
    reasons = []
    if lacking:
        reasons.append(f"topology lab {lab!r} lacks {', '.join(lacking)}")
    if unprovided:
        backends = ", ".join(sorted({h.backend for h in topology.hosts}))
        it = "it" if len(unprovided) == 1 else "them"
        reasons.append(
            f"topology lab {lab!r} declares {', '.join(unprovided)} but its backend "
            f"({backends}) cannot provide {it} yet (not provided by this bench yet)"
        )
    return "; ".join(reasons) or None
