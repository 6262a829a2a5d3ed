"""What runs on a test host's data path.

The vmxnet3 shell, the plugin interface, vendor plugins and PF control.
Empty until the NIC emulator and real SR-IOV issues land; see ../shared/ARCHITECTURE.md.
"""
