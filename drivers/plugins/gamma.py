"""Plugin for the gamma FPGA NIC, whose data path uses the alpha descriptor core."""

from __future__ import annotations

from drivers.plugin_api import ShellServices, VfInfo
from drivers.plugins.alpha import AlphaPlugin
from nic_emulators.vendors import window as w

PLUGIN_NAME = "gamma"
VENDOR = "gamma"
VERSION = "0.9"
API_VERSION = "1.1"


def plugin_entry(window: w.RegisterWindow, info: VfInfo, services: ShellServices) -> AlphaPlugin:
    return AlphaPlugin(window, info, services)
