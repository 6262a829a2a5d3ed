"""An old build of the alpha plugin (0.9), as a guest that was never updated still carries it.

Same name and vendor as ``drivers.plugins.alpha``, same data path, but built for
alpha VFs of major version 0: an alpha VF that asks for plugin 1.x must be
refused it ("major version differs") and its guest must stay in emulation
(conformance DP-01). Installed in a guest with the shell's ``install-plugin``
(name ``alpha``, module ``drivers.plugins.alpha_legacy``); never loaded by name.
"""

from __future__ import annotations

from drivers.plugin_api import ShellServices, VfInfo
from drivers.plugins.alpha import AlphaPlugin
from nic_emulators.vendors import window as w

PLUGIN_NAME = "alpha"
VENDOR = "alpha"
VERSION = "0.9"
API_VERSION = "1.1"


def plugin_entry(window: w.RegisterWindow, info: VfInfo, services: ShellServices) -> AlphaPlugin:
    return AlphaPlugin(window, info, services)
