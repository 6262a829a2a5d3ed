"""Hypervisor backends by the ``hypervisor:`` of the hosts they drive (labgrid-style registry)."""

from __future__ import annotations

from collections.abc import Callable

from bench.errors import UsageError
from bench.hypervisor.interface import Hypervisor
from bench.lab import Lab

Factory = Callable[[Lab], Hypervisor]
_BACKENDS: dict[str, Factory] = {}


def register(backend: str) -> Callable[[Factory], Factory]:
    """Class decorator: ``@register("emulated")`` makes the class the hypervisor of that
    host backend."""

    def add(factory: Factory) -> Factory:
        _BACKENDS[backend] = factory
        return factory

    return add


def hypervisor_for(lab: Lab) -> Hypervisor:
    """The hypervisor of ``lab``'s guests (all guests of a lab share one backend)."""
    import bench.hypervisor.emulated
    import bench.hypervisor.qemu  # noqa: F401  (each registers itself)

    backends = {lab.topology.host(g.host).hypervisor for g in lab.topology.guests}
    if not backends:
        raise UsageError(f"lab {lab.name!r} has no guests: there is nothing to migrate")
    if len(backends) > 1:
        raise UsageError(
            f"lab {lab.name!r} mixes hypervisors {sorted(backends)}; one hypervisor per lab"
        )
    (backend,) = backends
    try:
        factory = _BACKENDS[backend]
    except KeyError:
        known = ", ".join(sorted(_BACKENDS))
        raise UsageError(
            f"no hypervisor backend for hosts of hypervisor {backend!r} yet (available: {known})"
        ) from None
    return factory(lab)
