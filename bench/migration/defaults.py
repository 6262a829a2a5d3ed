"""Defaults of a migration under traffic, shared by the orchestrator and the command's
parser (which must not import the orchestrator: that loads the traffic engine and scapy)."""

#: Frames per second of the UDP flows, each way.
DEFAULT_PPS = 2000
