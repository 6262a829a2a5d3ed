"""Vendor descriptor formats: each vendor's datasheet layout and its device-side ring engine.

``*_layout`` modules are the datasheet (shared with the vendor's plugin, as a
driver includes the hardware's register header); the modules without the
suffix are the device model that consumes those rings. ``ENGINES`` maps a
vendor name to its device-side queue engine class.
"""
