"""Loads the bench's pytest plugin, so ``pytest --topology FILE`` runs against a lab."""

pytest_plugins = ["bench.pytest_plugin"]
