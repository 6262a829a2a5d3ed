"""``python -m nic_emulators.vmxnet3 --config FILE``: one guest's vmxnet3 device process.

Runs in the network namespace of the guest's host (``process.VmxProcess``).
"""

from __future__ import annotations

import sys

from nic_emulators.config import VmxConfig
from nic_emulators.process_main import serve
from nic_emulators.vmxnet3 import process


def main(argv: list[str] | None = None) -> int:
    return serve(
        "python -m nic_emulators.vmxnet3", process.__doc__, VmxConfig, process.VmxProcess, argv
    )


if __name__ == "__main__":
    sys.exit(main())
