"""The topology file's schema: what a lab is made of.

Pydantic models, frozen and strict about unknown keys, so that a typo in a
topology file is an error and not a silently ignored setting. Field-level
rules live here; rules that relate fields to each other (names unique,
references resolve, subnets disjoint) live in ``checks.py``, where they can
point at the exact field that breaks them.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Interface, IPv4Network
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _unicast_mac(value: str) -> str:
    mac = value.lower()
    if not _MAC_RE.match(mac):
        raise ValueError(f"expected a MAC address like 02:00:00:00:00:01, got {value!r}")
    if int(mac[:2], 16) & 1:
        raise ValueError(
            f"expected a unicast MAC address (even first byte), got the multicast {value!r}"
        )
    return mac


def _pci_address(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]", value.lower()):
        raise ValueError(f"expected a PCI address like 0000:3b:00.0, got {value!r}")
    return value.lower()


Name = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9-]{0,14}$",
        description="lower-case letters, digits and '-', starting with a letter, at most 15",
    ),
]
LabName = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9]{0,5}$",
        description="1-6 lower-case letters/digits; prefixes every namespace and interface",
    ),
]
InterfaceName = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_.-]{0,14}$",
        description="a Linux interface name: at most 15 characters",
    ),
]
MacAddress = Annotated[str, AfterValidator(_unicast_mac)]
#: A whole number; YAML's yes/no/true/false are refused rather than read as 1/0.
Count = Annotated[int, Field(strict=True)]
#: A finite number (``500`` or ``2.5``); booleans, strings, .inf and .nan are refused.
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
PciAddress = Annotated[str, AfterValidator(_pci_address)]


def _ip_text(example: str) -> BeforeValidator:
    """Refuse a YAML number where an IP is expected (pydantic reads ``7`` as 0.0.0.7)."""

    def check(value: object) -> object:
        # pydantic turns only ValueError into a validation error, hence no TypeError
        if isinstance(value, bool):
            got = f"the boolean {str(value).lower()}"
            raise ValueError(f"expected an IPv4 {example}, got {got}")  # noqa: TRY004
        if isinstance(value, int | float):
            raise ValueError(f"expected an IPv4 {example}, got the number {value!r}")  # noqa: TRY004
        return value

    return BeforeValidator(check)


Network = Annotated[IPv4Network, _ip_text("network, like 198.19.0.0/24")]
AddressWithPrefix = Annotated[
    IPv4Interface, _ip_text("address with its prefix length, like 198.19.0.1/24")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class LabSpec(_Strict):
    """The lab as a whole."""

    name: LabName = Field(description="short lab name; prefixes everything the bench creates")
    description: str = ""
    management: Network = Field(
        default=IPv4Network("198.18.0.0/24"),
        description=(
            "management network of emulated hosts: the controller reaches each host's "
            "sshd here (default in 198.18.0.0/15, the range reserved for network benchmarking)"
        ),
    )


class SshAccess(_Strict):
    """How the controller reaches a real host."""

    address: str = Field(min_length=1, description="IP address or DNS name of the host")
    port: Count = Field(default=22, ge=1, le=65535)
    user: str = Field(default="root", min_length=1)
    key: str = Field(min_length=1, description="private key file (relative to the topology file)")
    known_hosts: str = Field(
        min_length=1,
        description="known_hosts file pinning the host's key; unknown keys are refused",
    )


class Interface(_Strict):
    """A host's network interface attached to a lab switch."""

    name: InterfaceName
    switch: Name = Field(description="the lab switch this interface is cabled to")
    address: AddressWithPrefix | None = Field(
        default=None, description="address/prefix, e.g. 198.19.0.1/24"
    )
    mac: MacAddress | None = None


class Nic(_Strict):
    """An SR-IOV capable NIC of a host: an emulator model or a real PCI device."""

    name: Name
    model: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9-]*$",
        description="emulated NIC model (emulated hosts)",
    )
    pci: PciAddress | None = Field(default=None, description="PF PCI address (real hosts)")
    vfs: Count = Field(default=0, ge=0, le=256, description="number of VFs to create")
    link: InterfaceName | None = Field(
        default=None, description="the host interface that is this NIC's uplink"
    )


class Host(_Strict):
    """A test host: a network namespace with its own sshd (emulated) or a real server (lab)."""

    name: Name
    backend: Literal["emulated", "lab"] = "emulated"
    role: Literal["hypervisor", "traffic-generator", "generic"] = "generic"
    ssh: SshAccess | None = Field(default=None, description="required for lab hosts only")
    interfaces: tuple[Interface, ...] = ()
    nics: tuple[Nic, ...] = ()


class Switch(_Strict):
    """A lab switch: a MAC-learning Linux bridge on the emulated backend."""

    name: Name
    kind: Literal["learning-bridge"] = "learning-bridge"
    subnet: Network | None = Field(
        default=None, description="the IP subnet carried on this switch, if any"
    )


class Wire(_Strict):
    """One instrument channel wired to a part of the lab."""

    channel: Count = Field(ge=1, description="instrument channel, from 1")
    to: str = Field(
        pattern=r"^[a-z][a-z0-9-]{0,14}/[a-z][a-z0-9_.-]{0,14}$",
        description="HOST/NIC that a power-supply channel feeds, or HOST/INTERFACE whose "
        "link an attenuator channel sits on",
    )


#: A resource string meaning "the bench starts an emulator and fills this in".
EMULATED_RESOURCE = "emulated"


class Instrument(_Strict):
    """A lab instrument reached over VISA: a real one by resource string, or an emulator."""

    name: Name
    kind: Literal["power-supply", "optical-attenuator"]
    model: str | None = Field(
        default=None, description="expected in the *IDN? answer (checked when the bench opens it)"
    )
    resource: str = Field(
        default=EMULATED_RESOURCE,
        min_length=1,
        description="VISA resource string, e.g. TCPIP0::10.0.0.5::5025::SOCKET, or 'emulated': "
        "the bench starts an SCPI emulator on a real TCP socket and fills the string in",
    )
    channels: Count = Field(default=1, ge=1, le=64)
    wiring: tuple[Wire, ...] = Field(
        default=(), description="which channel powers which NIC / attenuates which link"
    )

    @property
    def emulated(self) -> bool:
        return self.resource == EMULATED_RESOURCE


class Guest(_Strict):
    """A guest VM whose paravirtual NIC is under test."""

    name: Name
    host: Name = Field(description="the hypervisor host the guest starts on")
    mac: MacAddress
    address: AddressWithPrefix
    switch: Name | None = Field(default=None, description="lab switch the guest's NIC reaches")
    nic_mode: Literal["npa", "failover", "emulation"] = Field(
        default="npa",
        description="npa: vmxnet3 shell + plugin; failover: virtio standby + VF primary",
    )


class Limits(_Strict):
    """Pass/fail thresholds used by conformance tests (never constants hidden in tests)."""

    blackout_ms: Number = Field(
        default=500.0, gt=0, description="longest gap between arrivals allowed during a switch"
    )
    migration_downtime_ms: Number = Field(
        default=1000.0, gt=0, description="longest migration downtime allowed"
    )
    loss_packets: Count = Field(
        default=0, ge=0, description="packets that may be lost outside the measured downtime"
    )
    migration_timeout_s: Number = Field(
        default=60.0, gt=0, description="a migration not done by then is rolled back"
    )
    vf_release_timeout_s: Number = Field(
        default=10.0, gt=0, description="how long a guest may take to release its VF"
    )
    command_timeout_s: Number = Field(
        default=30.0, gt=0, description="default deadline of one command on a host"
    )
    lab_up_timeout_s: Number = Field(
        default=60.0, gt=0, description="deadline for bringing the lab up"
    )


class Topology(_Strict):
    """A whole topology file."""

    lab: LabSpec
    hosts: tuple[Host, ...] = Field(min_length=1)
    switches: tuple[Switch, ...] = ()
    instruments: tuple[Instrument, ...] = ()
    guests: tuple[Guest, ...] = ()
    limits: Limits = Limits()

    def host(self, name: str) -> Host:
        """The host called ``name``; KeyError lists the known names."""
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise KeyError(f"no host {name!r} in lab {self.lab.name!r} (hosts: {known})")

    def capabilities(self) -> frozenset[str]:
        """What tests may require of this topology (see the ``requires`` marker).

        ``hosts:N`` for N up to the host count, ``backend:<name>`` per backend present,
        ``role:<role>``, ``instrument:<kind>``, ``nic:sriov`` when a NIC has VFs,
        ``guests`` when guests are defined.
        """
        caps = {f"hosts:{n}" for n in range(1, len(self.hosts) + 1)}
        caps |= {f"backend:{h.backend}" for h in self.hosts}
        caps |= {f"role:{h.role}" for h in self.hosts}
        caps |= {f"instrument:{i.kind}" for i in self.instruments}
        if any(n.vfs > 0 for h in self.hosts for n in h.nics):
            caps.add("nic:sriov")
        if self.guests:
            caps.add("guests")
        return frozenset(caps)
