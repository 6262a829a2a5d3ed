"""Loading the plugin a VF asks for — and refusing the wrong one.

GET_INFO names a plugin and its version; the guest loads the module of that
name from the plugins it has installed (``drivers.plugins``, or an override a
bring-up session installed) and checks it: the module must call itself by that
name, drive that vendor, share the VF's major version, and speak this shell's
plugin API major version, at a minor version it offers (1.1 offers what 1.0
did and more; a plugin written against a later minor may call what this shell
lacks). Anything else is refused with the reason, and the guest stays in
emulation.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from drivers.plugin_api import API_VERSION, PluginRefused


def major(version: str) -> str:
    return str(version).split(".", 1)[0]


def minor(version: str) -> int:
    _, _, rest = str(version).partition(".")
    return int(rest.split(".", 1)[0] or 0)


def load_plugin(
    info: dict[str, Any], installed: dict[str, str], reload: bool = False
) -> ModuleType:
    """The checked plugin module for GET_INFO record ``info``; PluginRefused says why not."""
    name = str(info["plugin"])
    module_name = installed.get(name, f"drivers.plugins.{name}")
    try:
        module = importlib.import_module(module_name)
        if reload:
            module = importlib.reload(module)
    except ImportError as err:
        raise PluginRefused(f"no plugin {name!r} installed in the guest ({err})") from None
    found = {
        k: getattr(module, k, None) for k in ("PLUGIN_NAME", "VENDOR", "VERSION", "API_VERSION")
    }
    described = f"plugin {found['PLUGIN_NAME']} {found['VERSION']} (vendor {found['VENDOR']})"
    if found["PLUGIN_NAME"] != name:
        raise PluginRefused(f"{described} is not the plugin {name!r} the VF asks for")
    if found["VENDOR"] != info["vendor"]:
        raise PluginRefused(f"{described} does not drive VFs of vendor {info['vendor']!r}")
    if major(str(found["VERSION"])) != major(str(info["plugin_version"])):
        raise PluginRefused(
            f"{described}: the VF needs version {info['plugin_version']} (major version differs)"
        )
    api = str(found["API_VERSION"])
    if major(api) != major(API_VERSION) or minor(api) > minor(API_VERSION):
        raise PluginRefused(f"{described} speaks plugin API {api}, the shell {API_VERSION}")
    if not callable(getattr(module, "plugin_entry", None)):
        raise PluginRefused(f"{described} has no plugin_entry")
    return module
