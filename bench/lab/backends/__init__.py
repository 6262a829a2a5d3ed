"""Lab backends, looked up by the topology's ``backend:`` value."""

from bench.lab.backends import emulated, real
from bench.lab.backends.registry import Backend, backend_for, register_backend

__all__ = ["Backend", "backend_for", "emulated", "real", "register_backend"]
