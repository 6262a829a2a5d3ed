"""NIC models the emulated backend offers, by the name a topology's ``model:`` uses.

Each model is a vendor: its descriptor layout (``nic_emulators.vendors``),
its VF capabilities, and the plugin its VFs report in GET_INFO.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NicModel:
    name: str
    vendor: str
    #: Plugin module under ``drivers.plugins`` that GET_INFO names, and its version.
    plugin: str
    plugin_version: str
    #: Features a VF of this model offers (UPT capability bits by name).
    features: frozenset[str]
    queues: int
    ring_size: int
    #: Registers reached over a CSR socket (FPGA boards), powered by a PSU channel.
    csr: bool = False
    description: str = ""


MODELS: dict[str, NicModel] = {
    m.name: m
    for m in (
        NicModel(
            name="alpha-10g",
            vendor="alpha",
            plugin="alpha",
            plugin_version="1.2",
            features=frozenset({"csum", "vlan", "tso", "rss", "lro"}),
            queues=2,
            ring_size=4096,
            description="in-place descriptor write-back (DD bit), addresses in descriptors",
        ),
        NicModel(
            name="beta-25g",
            vendor="beta",
            plugin="beta",
            plugin_version="3.0",
            features=frozenset({"csum", "vlan"}),
            queues=1,
            ring_size=4096,
            description="buffer ids in work queue entries, separate completion queues "
            "with an ownership (generation) bit; no TSO, no RSS",
        ),
        NicModel(
            name="fpga-nic",
            vendor="gamma",
            plugin="gamma",
            plugin_version="0.9",
            features=frozenset({"csum"}),
            queues=1,
            ring_size=1024,
            csr=True,
            description="FPGA board: registers over a CSR socket, powered by a supply channel",
        ),
    )
}

MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
