"""CSR transport of the emulated FPGA NIC: wire format, register map, server.

``protocol`` is the 12-byte request/response format, ``regmap`` the board's
register map (and the ``FpgaBoard`` interface it reads and drives), ``server``
the non-blocking TCP endpoint for the NIC emulator's ``selectors`` loop. The
blocking client is ``drivers.csr_client``.
"""

from nic_emulators.csr.protocol import Op, Status
from nic_emulators.csr.regmap import (
    REGISTERS,
    CsrFault,
    FpgaBoard,
    RegisterMap,
    register_address,
    register_name,
    vf_register,
)
from nic_emulators.csr.server import CsrServer

__all__ = [
    "REGISTERS",
    "CsrFault",
    "CsrServer",
    "FpgaBoard",
    "Op",
    "RegisterMap",
    "Status",
    "register_address",
    "register_name",
    "vf_register",
]
