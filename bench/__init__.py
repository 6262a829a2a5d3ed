"""NPA Bench: a hardware-in-the-loop test bench for NIC plugin data paths.

The flow reads top-down: a topology file (``bench.topology``) becomes a running
lab (``bench.lab``), whose hosts are driven over SSH (``bench.ssh``); tests run
against it under pytest (``bench.pytest_plugin``) and ``bench.cli`` ties it
together as the ``npabench`` command.
"""

__version__ = "0.1.0"
