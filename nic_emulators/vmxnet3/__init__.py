"""The vmxnet3 emulated device: the hypervisor side of a guest's paravirtual NIC.

``layout`` is the device's register and ring format (shared with the guest's
shell), ``backend`` the emulation data path, ``device`` the device model that
switches the guest between passthrough and emulation, ``__main__`` the process.
"""
