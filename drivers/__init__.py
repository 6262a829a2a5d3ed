"""What runs on a test host's data path: vmxnet3 shell, plugin interface, vendor plugins, PF control.

Empty until the NIC emulator and real SR-IOV issues land; see ../shared/ARCHITECTURE.md.
"""
