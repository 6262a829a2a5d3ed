"""Names of everything the emulated backend creates, all derived from the lab name.

Root-namespace interface names are limited to 15 characters, so they are
built from the (at most 6 character) lab name and indexes; every such link
also carries the alias ``npabench:<lab>`` so a sweep can find it by owner.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from bench.topology import checks

#: Offset of the first host in the management network (below it: the bench's).
FIRST_HOST_OFFSET = checks.MANAGEMENT_FIRST_HOST
#: Name of the management interface inside every emulated host (the loader reserves it).
MANAGEMENT_INTERFACE = checks.MANAGEMENT_INTERFACE


def netns_name(lab: str, host: str) -> str:
    """Network namespace of an emulated host, or of a guest of one.

    Guests share the scheme: the loader keeps guest names unique among hosts
    and guests, so the namespaces never collide, and the prefix sweep of a
    teardown finds guests' namespaces with the hosts'.
    """
    return f"{netns_prefix(lab)}{host}"


#: Every namespace the bench creates starts with this.
NETNS_PREFIX = "npa-"
#: Every root-namespace link the bench creates has an alias starting with this.
LINK_ALIAS_PREFIX = "npabench:"


def netns_prefix(lab: str) -> str:
    return f"{NETNS_PREFIX}{lab}-"


def link_alias(lab: str) -> str:
    """The alias marking a root-namespace link as owned by ``lab``."""
    return f"{LINK_ALIAS_PREFIX}{lab}"


def management_bridge(lab: str) -> str:
    return f"{lab}-mg"


def management_veth(lab: str, host_index: int) -> str:
    return f"{lab}-m{host_index}"


def switch_bridge(lab: str, switch_index: int) -> str:
    return f"{lab}-s{switch_index}"


def data_veth(lab: str, host_index: int, interface_index: int) -> str:
    return f"{lab}-h{host_index}i{interface_index}"


def controller_address(management: IPv4Network) -> IPv4Address:
    """The controller's own address on the management network."""
    return management.network_address + 1


def host_address(management: IPv4Network, host_index: int) -> IPv4Address:
    """Management (SSH) address of the emulated host with index ``host_index``.

    Guests use the same numbering after the hosts (see ``guest_index``).
    """
    return management.network_address + FIRST_HOST_OFFSET + host_index


def guest_index(host_count: int, guest: int) -> int:
    """Management index (address, veth) of a guest: after the ``host_count`` emulated hosts.

    Hosts and guests share one numbering so each gets its own management
    address and veth name without a second scheme to keep apart.
    """
    return host_count + guest
