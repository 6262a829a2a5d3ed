"""QEMU machines the bench boots itself: guest images built from Debian packages, the QEMU
process and its QMP socket, and the SR-IOV lab host (an ``igb`` NIC in a TCG or KVM guest).

Split so that another QEMU user (the failover backend's guests) can take the image
builder (``image_builder``), the accelerator probe (``accel``) and the process with its
QMP client (``process``, ``qmp``) without the SR-IOV host's specifics (``sriov_host``).
"""
