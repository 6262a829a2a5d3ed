"""The shell's plugin checks (``drivers.plugin_loader``): a plugin module is loaded only
when its name, vendor, version major and plugin API fit the VF and this shell."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from drivers.plugin_api import API_VERSION, PluginRefused
from drivers.plugin_loader import load_plugin

INFO = {"plugin": "alpha", "vendor": "alpha", "plugin_version": "1.0"}


@pytest.fixture
def plugin() -> Iterator[types.ModuleType]:
    """A plugin module as a bring-up session installs one (``installed`` override)."""
    module = types.ModuleType("npt_test_plugin")
    module.PLUGIN_NAME, module.VENDOR, module.VERSION = "alpha", "alpha", "1.3"  # type: ignore[attr-defined]
    module.API_VERSION = API_VERSION  # type: ignore[attr-defined]
    module.plugin_entry = lambda *args: None  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def load(module: types.ModuleType) -> types.ModuleType:
    return load_plugin(INFO, {"alpha": module.__name__})


@pytest.mark.parametrize("api", ["1.0", "1.1", "1"])
def test_a_plugin_of_this_api_or_an_earlier_minor_loads(plugin: types.ModuleType, api: str) -> None:
    plugin.API_VERSION = api  # type: ignore[attr-defined]
    assert load(plugin) is plugin


@pytest.mark.parametrize("api", ["1.2", "2.0", "0.9"])
def test_a_plugin_of_a_later_minor_or_another_major_is_refused(
    plugin: types.ModuleType, api: str
) -> None:
    plugin.API_VERSION = api  # type: ignore[attr-defined]
    with pytest.raises(PluginRefused, match=rf"speaks plugin API {api}, the shell {API_VERSION}"):
        load(plugin)


@pytest.mark.parametrize("name, version", [("alpha", "1.0"), ("beta", "3.0"), ("gamma", "0.9")])
def test_the_shipped_plugins_speak_this_api(name: str, version: str) -> None:
    module = load_plugin({"plugin": name, "vendor": name, "plugin_version": version}, {})
    assert module.API_VERSION == API_VERSION
