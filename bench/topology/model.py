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

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from nic_emulators.config import PortPolicy
from nic_emulators.models import MODEL_NAMES

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
#: true or false; YAML's yes/no/on/off read as booleans, but 1/0 and strings are refused.
Flag = Annotated[bool, Field(strict=True)]
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


#: Largest VLAN id a port may use (4095 is reserved by 802.1Q).
VLAN_MAX = 4094


def _vlan_range(value: object) -> object:
    """A VLAN id (``100``) or an inclusive range (``"100-199"``), as ``"lo-hi"`` text."""
    if isinstance(value, bool):
        raise ValueError(  # noqa: TRY004 (pydantic only words ValueError)
            f"expected a VLAN id or a range like '100-199', got the boolean {str(value).lower()}"
        )
    text = str(value) if isinstance(value, int) else value
    if not isinstance(text, str):
        got = "a number with a decimal point" if isinstance(text, float) else "a list or mapping"
        raise ValueError(f"expected a VLAN id or a range like '100-199', got {got}")  # noqa: TRY004
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if match is None:
        raise ValueError(f"expected a VLAN id or a range like '100-199', got {text!r}")
    low = int(match[1])
    high = int(match[2]) if match[2] is not None else low
    if not 1 <= low <= high <= VLAN_MAX:
        raise ValueError(
            f"expected VLAN ids from 1 to {VLAN_MAX} with the lower one first, got {text!r}"
        )
    return f"{low}-{high}"


VlanRange = Annotated[
    str,
    BeforeValidator(_vlan_range),
    Field(description="a VLAN id (100) or an inclusive range ('100-199'), ids 1-4094"),
]
#: An MTU a Linux netdev accepts for IPv4 (68) up to the largest jumbo frame the NICs take.
Mtu = Annotated[int, Field(strict=True, ge=68, le=9000)]

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


class VfSpec(_Strict):
    """Settings the PF gives one VF of a real NIC at ``up`` (``ip link set <pf> vf N ...``);
    what is left out stays as the NIC has it. ``down`` puts back what was there before."""

    vf: Count = Field(ge=0, le=255, description="VF index, from 0")
    mac: MacAddress | None = None
    vlan: Count | None = Field(default=None, ge=0, le=4094, description="port VLAN (0: none)")
    qos: Count | None = Field(default=None, ge=0, le=7, description="802.1p priority of it")
    spoofchk: Flag | None = None
    trust: Flag | None = None
    link_state: Literal["auto", "enable", "disable"] | None = None
    max_tx_rate: Count | None = Field(default=None, ge=0, description="Mbit/s, 0: no limit")
    min_tx_rate: Count | None = Field(default=None, ge=0, description="Mbit/s, 0: no minimum")


#: Emulated PCI NICs QEMU can plug as a failover guest's primary (standing in for a VF).
QEMU_PRIMARY_MODELS = ("vmxnet3", "e1000e")


class QemuHost(_Strict):
    """A lab host the bench boots itself: a QEMU guest with an igb (SR-IOV) NIC, reached
    over SSH on the ``ssh:`` port of 127.0.0.1 like any lab server (tests and demos)."""

    image: str = Field(
        min_length=1,
        description="directory of the built image (kernel, initrd, keys; relative to the "
        "topology file): `make qemu-sriov-image` makes build/qemu-sriov-host",
    )
    memory_mb: Count = Field(default=512, ge=256, le=8192)
    cpus: Count = Field(
        default=1,
        ge=1,
        le=8,
        description="virtual CPUs; 2 for a host that runs QEMU guests of its own "
        "('hypervisor: qemu'), so the nested guest's TCG thread has one to itself",
    )


class Nic(_Strict):
    """An SR-IOV capable NIC of a host: an emulator model or a real PCI device."""

    name: Name
    model: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9-]*$",
        description=f"emulated NIC model (emulated hosts): one of {', '.join(MODEL_NAMES)}",
    )
    pci: PciAddress | None = Field(default=None, description="PF PCI address (real hosts)")
    vfs: Count = Field(default=0, ge=0, le=256, description="number of VFs to create")
    link: InterfaceName | None = Field(
        default=None,
        description="the host interface that is this NIC's uplink (emulated hosts: "
        "default the host's first interface)",
    )
    vf_config: tuple[VfSpec, ...] = Field(
        default=(), description="real NICs: settings of individual VFs, applied at up"
    )


class Host(_Strict):
    """A test host: a network namespace with its own sshd (emulated) or a real server (lab)."""

    name: Name
    backend: Literal["emulated", "lab"] = "emulated"
    hypervisor: Literal["emulated", "qemu"] = Field(
        default="emulated",
        description="what runs this host's guests: emulated (a namespace per guest, vmxnet3 "
        "shell + plugin) or qemu (a QEMU VM per guest: virtio standby + emulated primary "
        "under net_failover; the host's NIC model names the primary: "
        + ", ".join(QEMU_PRIMARY_MODELS)
        + ")",
    )
    role: Literal["hypervisor", "traffic-generator", "generic"] = "generic"
    ssh: SshAccess | None = Field(default=None, description="required for lab hosts only")
    qemu: QemuHost | None = Field(
        default=None, description="lab hosts only: boot this host as a QEMU guest at up"
    )
    interfaces: tuple[Interface, ...] = ()
    nics: tuple[Nic, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _default_nic_links(cls, data: object) -> object:
        """An emulated host's NIC without ``link:`` is cabled to the host's first interface.

        Filled in before validation so that ``Nic.link`` holds the uplink the
        bench really uses; only a well-formed interface name is taken, so a
        bad name is reported once, at the interface.
        """
        if not isinstance(data, dict) or data.get("backend", "emulated") != "emulated":
            return data
        interfaces, nics = data.get("interfaces"), data.get("nics")
        if not isinstance(interfaces, list | tuple) or not isinstance(nics, list | tuple):
            return data
        first = interfaces[0] if interfaces else None
        name = first.get("name") if isinstance(first, dict) else getattr(first, "name", None)
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_.-]{0,14}", name):
            return data
        filled: list[object] = []
        for nic in nics:
            if isinstance(nic, dict) and nic.get("link") is None:
                filled.append({**nic, "link": name})
            elif isinstance(nic, Nic) and nic.link is None:
                filled.append(nic.model_copy(update={"link": name}))
            else:
                filled.append(nic)
        return {**data, "nics": filled}

    def nic(self, name: str) -> Nic | None:
        """The NIC called ``name`` on this host, if any."""
        return next((n for n in self.nics if n.name == name), None)


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


class GuestPolicy(_Strict):
    """What the administrator allows a guest's port: enforced by the NIC and the vmxnet3 device."""

    mac_change: Flag = Field(default=False, description="may the guest change its MAC address")
    vlans: tuple[VlanRange, ...] = Field(
        default=("1-4094",),
        description="VLAN ids the guest may use: ids (100) or ranges ('100-199'); "
        "an empty list allows untagged frames only",
    )
    antispoof: Flag = Field(
        default=True, description="drop frames the guest sends from another source MAC"
    )
    mtu_max: Mtu = Field(default=9000, description="largest MTU the guest may set")

    def vlan_ranges(self) -> tuple[tuple[int, int], ...]:
        """``vlans`` as inclusive (low, high) pairs."""
        pairs = (text.split("-", 1) for text in self.vlans)
        return tuple((int(low), int(high)) for low, high in pairs)

    def port_policy(self) -> PortPolicy:
        """The policy as the NIC emulator and the vmxnet3 device take it."""
        return PortPolicy(
            mac_change=self.mac_change,
            vlans=self.vlan_ranges(),
            antispoof=self.antispoof,
            mtu_max=self.mtu_max,
        )


class Guest(_Strict):
    """A guest VM whose paravirtual NIC is under test."""

    name: Name
    host: Name = Field(description="the hypervisor host the guest starts on")
    mac: MacAddress
    address: AddressWithPrefix
    switch: Name | None = Field(
        default=None,
        description="lab switch the guest's NIC reaches (default: the one its NIC's uplink "
        "is cabled to)",
    )
    nic_mode: Literal["npa", "failover", "emulation"] = Field(
        default="npa",
        description="npa: vmxnet3 shell + plugin; failover: virtio standby + VF primary "
        "(QEMU backend only); emulation: never asks for a VF",
    )
    nic: Name | None = Field(
        default=None,
        description="the NIC of its host it may take VFs from (default: the host's first "
        "NIC with VFs)",
    )
    mtu: Mtu = Field(default=1500, description="MTU of the guest's NIC")
    memory_reserved: Flag = Field(
        default=True,
        description="NPA needs the guest's memory fully reserved; false keeps passthrough "
        "inactive, with that reason reported",
    )
    policy: GuestPolicy = Field(
        default_factory=GuestPolicy, description="what the guest's port is allowed"
    )
    vswitch_uplink: InterfaceName | None = Field(
        default=None,
        description="host interface that carries the guest's emulated traffic instead of its "
        "NIC's PF port: a vSwitch uplink that survives the NIC's link or power loss",
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
    passthrough_return_s: Number = Field(
        default=10.0,
        gt=0,
        description="after a migration, how long the guest may take from resuming at the "
        "destination to passthrough there (when the destination offers a VF)",
    )
    timeline_slack_ms: Number = Field(
        default=20.0,
        ge=0,
        description="how far outside the hypervisor's downtime a lost frame may have been "
        "due and still count as lost inside it (queueing and latency on the way)",
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

    def guest(self, name: str) -> Guest:
        """The guest called ``name``; KeyError lists the known names."""
        for guest in self.guests:
            if guest.name == name:
                return guest
        known = ", ".join(g.name for g in self.guests) or "none"
        raise KeyError(f"no guest {name!r} in lab {self.lab.name!r} (guests: {known})")

    def emulated_guests(self) -> list[Guest]:
        """Guests of emulated hosts: the emulated backend makes each a namespace with an sshd
        (and takes a management address for it, after the hosts')."""
        emulated = {
            h.name for h in self.hosts if h.backend == "emulated" and h.hypervisor == "emulated"
        }
        return [g for g in self.guests if g.host in emulated]

    def qemu_guests(self) -> list[Guest]:
        """Guests of hosts whose hypervisor is QEMU: each a VM, reached over its console."""
        qemu = {h.name for h in self.hosts if h.hypervisor == "qemu"}
        return [g for g in self.guests if g.host in qemu]

    def guest_nic(self, guest: Guest) -> Nic | None:
        """The NIC of its host that ``guest`` uses: ``nic:``, else the first with VFs, else the
        first NIC (its PF port still carries the emulated path), else None."""
        host = next((h for h in self.hosts if h.name == guest.host), None)
        if host is None:
            return None
        if guest.nic is not None:
            return host.nic(guest.nic)
        return next((n for n in host.nics if n.vfs > 0), host.nics[0] if host.nics else None)

    def guest_switch(self, guest: Guest) -> str | None:
        """The lab switch ``guest``'s frames reach: the one its NIC's uplink is cabled to,
        else its ``switch:`` (the loader refuses a ``switch:`` that disagrees)."""
        host = next((h for h in self.hosts if h.name == guest.host), None)
        nic = self.guest_nic(guest)
        if host is not None and nic is not None and nic.link is not None:
            cabled = next((i.switch for i in host.interfaces if i.name == nic.link), None)
            if cabled is not None:
                return cabled
        return guest.switch

    def capabilities(self) -> frozenset[str]:
        """What tests may require of this topology (see the ``requires`` marker).

        ``hosts:N`` for N up to the host count, ``backend:<name>`` per backend present,
        ``hypervisor:<name>`` per hypervisor of a hypervisor host,
        ``role:<role>``, ``instrument:<kind>``, ``nic:sriov`` when a NIC has VFs,
        ``nic:<model>`` per emulated NIC model present, ``guests`` when guests are
        defined and ``guests:N`` for N up to the guest count.
        """
        caps = {f"hosts:{n}" for n in range(1, len(self.hosts) + 1)}
        caps |= {f"backend:{h.backend}" for h in self.hosts}
        caps |= {f"hypervisor:{h.hypervisor}" for h in self.hosts if h.role == "hypervisor"}
        caps |= {f"role:{h.role}" for h in self.hosts}
        caps |= {f"instrument:{i.kind}" for i in self.instruments}
        nics = [n for h in self.hosts for n in h.nics]
        if any(n.vfs > 0 for n in nics):
            caps.add("nic:sriov")
        caps |= {f"nic:{n.model}" for n in nics if n.model is not None}
        if self.guests:
            caps.add("guests")
        caps |= {f"guests:{n}" for n in range(1, len(self.guests) + 1)}
        return frozenset(caps)
