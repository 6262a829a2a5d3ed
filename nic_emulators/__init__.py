"""Device models: SR-IOV NICs (PF, VFs, embedded switch), vmxnet3 emulation, FPGA NIC.

Empty until the NIC emulator issue lands; see ../shared/ARCHITECTURE.md.
"""
