"""Vendor plugins, one module per plugin name a VF reports in GET_INFO (see drivers.plugin_api)."""
