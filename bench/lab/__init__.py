"""Labs: bring a topology up as running hosts, reach them, tear them down."""

from bench.lab.lab import Lab
from bench.lab.lifecycle import attach, bring_down, bring_up, bring_up_topology
from bench.lab.state import LabState, state_root
from bench.lab.teardown import cleanup_lab

__all__ = [
    "Lab",
    "LabState",
    "attach",
    "bring_down",
    "bring_up",
    "bring_up_topology",
    "cleanup_lab",
    "state_root",
]
