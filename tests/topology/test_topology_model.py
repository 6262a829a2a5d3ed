"""Valid topologies: what loads, the defaults, capabilities, YAML features, the JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.topology import Limits, Position, Topology, TopologyError, load_topology
from bench.topology.checks import MANAGEMENT_INTERFACE, RESERVED_INTERFACE_NAMES
from bench.topology.issues import format_path
from nic_emulators.config import PortPolicy

ROOT = Path(__file__).parents[2]
GOOD = [
    *sorted((ROOT / "topologies").glob("*.yaml")),
    Path(__file__).parent / "good" / "full-emulated.yaml",
]

MINIMAL = """\
lab: {name: t}
switches: [{name: sw0, subnet: 198.19.0.0/24}]
hosts:
  - name: h1
    interfaces: [{name: eth0, switch: sw0, address: 198.19.0.1/24, mac: "02:AB:CD:EF:00:01"}]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_both_shipped_topologies_are_there() -> None:
    names = {p.name for p in GOOD}
    assert {"emulated-lab.yaml", "example-real-lab.yaml"} <= names


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_valid_topology_loads(path: Path) -> None:
    topo = load_topology(path)
    assert topo.hosts
    assert topo.host(topo.hosts[0].name) is topo.hosts[0]


def test_limits_defaults_are_the_documented_values(tmp_path: Path) -> None:
    documented = {
        "blackout_ms": 500.0,
        "migration_downtime_ms": 1000.0,
        "loss_packets": 0,
        "migration_timeout_s": 60.0,
        "vf_release_timeout_s": 10.0,
        "passthrough_return_s": 10.0,
        "timeline_slack_ms": 20.0,
        "command_timeout_s": 30.0,
        "lab_up_timeout_s": 60.0,
    }
    assert Limits().model_dump() == documented
    assert load_topology(_write(tmp_path, MINIMAL)).limits == Limits()
    for name, field in Limits.model_fields.items():
        assert field.description, f"limits.{name} has no description"


def test_limits_given_in_the_file_override_only_those_values() -> None:
    topo = load_topology(ROOT / "topologies" / "example-real-lab.yaml")
    assert topo.limits.blackout_ms == 200
    assert topo.limits.migration_downtime_ms == 500
    assert topo.limits.command_timeout_s == Limits().command_timeout_s


def test_capabilities_of_the_emulated_lab() -> None:
    topo = load_topology(ROOT / "topologies" / "emulated-lab.yaml")
    assert topo.capabilities() == {
        "hosts:1",
        "hosts:2",
        "hosts:3",
        "hosts:4",
        "backend:emulated",
        "hypervisor:emulated",
        "role:hypervisor",
        "role:traffic-generator",
        "instrument:power-supply",
        "instrument:optical-attenuator",
        "nic:sriov",
        "nic:alpha-10g",
        "nic:beta-25g",
        "nic:fpga-nic",
        "guests",
        "guests:1",
        "guests:2",
        "guests:3",
    }


def test_capabilities_of_the_real_lab() -> None:
    caps = load_topology(ROOT / "topologies" / "example-real-lab.yaml").capabilities()
    assert {"backend:lab", "nic:sriov", "instrument:power-supply"} <= caps
    assert {"instrument:optical-attenuator", "hosts:3"} <= caps
    assert "backend:emulated" not in caps
    assert "guests" not in caps
    assert "hosts:4" not in caps


def test_capabilities_with_guests_and_vfs() -> None:
    caps = load_topology(GOOD[-1]).capabilities()
    assert {"guests", "nic:sriov", "instrument:power-supply"} <= caps


def test_host_lookup_names_the_known_hosts(tmp_path: Path) -> None:
    topo = load_topology(_write(tmp_path, MINIMAL))
    with pytest.raises(KeyError, match=r"no host 'nope' in lab 't' \(hosts: h1\)"):
        topo.host("nope")


def test_mac_addresses_are_normalised_to_lower_case(tmp_path: Path) -> None:
    topo = load_topology(_write(tmp_path, MINIMAL))
    assert topo.hosts[0].interfaces[0].mac == "02:ab:cd:ef:00:01"


def test_merge_keys_and_anchors(tmp_path: Path) -> None:
    text = """\
lab: {name: t}
switches: [{name: sw0, subnet: 198.19.0.0/24}]
hosts:
  - &hypervisor
    name: hv-a
    role: hypervisor
    nics: [&nic {name: nic0, model: alpha-10g, vfs: 4, link: uplink0}]
    interfaces: [{name: uplink0, switch: sw0, address: 198.19.0.11/24}]
  - <<: *hypervisor
    name: hv-b                         # overrides the merged name
    interfaces: [{name: uplink0, switch: sw0, address: 198.19.0.12/24}]
  - name: hv-c
    role: hypervisor
    nics: [*nic]
    interfaces: [{<<: {name: uplink0, switch: sw0}, address: 198.19.0.13/24}]
"""
    topo = load_topology(_write(tmp_path, text))
    a, b, c = topo.hosts
    assert (b.name, b.role, b.nics) == ("hv-b", "hypervisor", a.nics)
    assert str(b.interfaces[0].address) == "198.19.0.12/24"
    assert c.nics == a.nics
    assert c.interfaces[0].switch == "sw0"


def test_a_fault_in_a_merged_mapping_points_at_the_anchor(tmp_path: Path) -> None:
    text = """\
lab: {name: t}
hosts:
  - &base
    name: h1
    role: hypervisr
  - <<: *base
    name: h2
"""
    with pytest.raises(TopologyError) as info:
        load_topology(_write(tmp_path, text))
    assert [
        (i.position.line if i.position else 0, format_path(i.path)) for i in info.value.issues
    ] == [
        (5, "hosts[0].role"),
        (5, "hosts[1].role"),
    ]


def test_several_faults_are_all_reported_in_file_order(tmp_path: Path) -> None:
    # Pydantic reports in model order (lab, hosts, switches, ...); the file
    # has switches before hosts, and the error lists by line.
    text = """\
lab: {name: t}
switches:
  - {name: sw0, subnet: 198.19.0.1/24}
hosts:
  - name: h1
    role: hypervisr
    interfaces: [{name: eth0, switch: sw0, address: 198.19.0.1/33}]
  - {name: h2, vfs: 3}
limits: {blackout_ms: -1}
"""
    with pytest.raises(TopologyError) as info:
        load_topology(_write(tmp_path, text))
    found = [(i.position.line if i.position else 0, format_path(i.path)) for i in info.value.issues]
    assert found == [
        (3, "switches[0].subnet"),
        (6, "hosts[0].role"),
        (7, "hosts[0].interfaces[0].address"),
        (8, "hosts[1].vfs"),
        (9, "limits.blackout_ms"),
    ]
    assert str(info.value).count("\n") == len(found) - 1


def test_several_cross_field_faults_are_all_reported_in_file_order(tmp_path: Path) -> None:
    text = """\
lab: {name: t}
switches: [{name: sw0, subnet: 198.19.0.0/24}]
hosts:
  - name: h1
    interfaces: [{name: eth0, switch: sw9, address: 198.19.0.1/24}]
  - name: h1
    backend: lab
guests:
  - {name: g1, host: h2, mac: "02:00:00:00:00:01", address: 198.19.0.50/24}
"""
    with pytest.raises(TopologyError) as info:
        load_topology(_write(tmp_path, text))
    found = [(i.position.line if i.position else 0, format_path(i.path)) for i in info.value.issues]
    assert found == [
        (5, "hosts[0].interfaces[0].switch"),
        (6, "hosts[1].name"),  # same line and column: in the order the rules run
        (6, "hosts[1]"),
        (9, "guests[0].host"),
    ]


def test_json_schema_is_valid_json_with_the_field_descriptions() -> None:
    text = json.dumps(Topology.model_json_schema())
    schema = json.loads(text)
    assert schema["title"] == "Topology"
    assert {"lab", "hosts"} <= set(schema["required"])
    for description in (
        "short lab name; prefixes everything the bench creates",
        "the lab switch this interface is cabled to",
        "PF PCI address (real hosts)",
        "the hypervisor host the guest starts on",
        "longest gap between arrivals allowed during a switch",
    ):
        assert description in text


@pytest.mark.parametrize(
    ("given", "expected"),
    [("500", 500.0), ("2.5", 2.5), ("1.0e+3", 1000.0)],
)
def test_limits_take_integers_and_decimals(tmp_path: Path, given: str, expected: float) -> None:
    topo = load_topology(_write(tmp_path, MINIMAL + f"limits: {{blackout_ms: {given}}}\n"))
    assert topo.limits.blackout_ms == expected
    assert isinstance(topo.limits.blackout_ms, float)


@pytest.mark.parametrize(
    ("given", "got"),
    [
        ("yes", "got the boolean true"),
        ("false", "got the boolean false"),
        ('"500"', "got '500' (YAML reads this as a string"),
        ("1e3", "got '1e3' (YAML reads this as a string"),  # YAML 1.1 wants 1.0e+3
        (".inf", "expected a finite number, got the number .inf"),
        ("-.inf", "expected a finite number, got the number -.inf"),
        (".nan", "expected a finite number, got the number .nan"),
        ("fast", "expected a number, got 'fast'"),
    ],
)
def test_every_float_limit_is_strict(tmp_path: Path, given: str, got: str) -> None:
    floats = [n for n, f in Limits.model_fields.items() if f.annotation is float]
    assert len(floats) == 8
    for name in floats:
        path = _write(tmp_path, MINIMAL + f"limits:\n  {name}: {given}\n")
        with pytest.raises(TopologyError) as info:
            load_topology(path)
        (issue,) = info.value.issues
        assert (issue.position, format_path(issue.path)) == (Position(7, 3), f"limits.{name}")
        assert got in issue.message, issue.message


def test_a_whole_decimal_count_is_shown_as_written(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "hosts:", "hosts:\n  - {name: h0, nics: [{name: n0, model: m, vfs: 2.0}]}"
    )
    with pytest.raises(TopologyError) as info:
        load_topology(_write(tmp_path, text))
    (issue,) = info.value.issues
    assert issue.message == (
        "expected an integer, got the number 2.0 (write it without the decimal point: 2)"
    )


@pytest.mark.parametrize("name", sorted(RESERVED_INTERFACE_NAMES))
def test_reserved_interface_names_are_refused_on_emulated_hosts_only(
    tmp_path: Path, name: str
) -> None:
    emulated = MINIMAL.replace("name: eth0", f"name: {name}")
    with pytest.raises(TopologyError) as info:
        load_topology(_write(tmp_path, emulated))
    (issue,) = info.value.issues
    assert (issue.position, format_path(issue.path)) == (
        Position(5, 19),
        "hosts[0].interfaces[0].name",
    )
    assert issue.message.startswith(
        f"interface name {name!r} is reserved by the emulated backend for "
        f"{RESERVED_INTERFACE_NAMES[name]}"
    )
    lab = emulated.replace(
        "  - name: h1\n",
        "  - name: h1\n    backend: lab\n    ssh: {address: h1.example, key: k, known_hosts: kh}\n",
    )
    assert load_topology(_write(tmp_path, lab)).hosts[0].interfaces[0].name == name


def test_the_management_interface_is_reserved() -> None:
    assert MANAGEMENT_INTERFACE == "mgmt0"
    assert set(RESERVED_INTERFACE_NAMES) == {"lo", MANAGEMENT_INTERFACE}


GUESTS = """\
lab: {name: t}
switches: [{name: sw0, subnet: 198.19.0.0/24}, {name: sw1, subnet: 198.19.1.0/24}]
hosts:
  - name: hv
    role: hypervisor
    interfaces:
      - {name: up0, switch: sw0, address: 198.19.0.1/24}
      - {name: up1, switch: sw1, address: 198.19.1.1/24}
    nics:
      - {name: nic0, model: beta-25g}
      - {name: nic1, model: alpha-10g, vfs: 2, link: up1}
guests:
  - {name: vm1, host: hv, mac: "02:00:00:00:01:01", address: 198.19.1.10/24}
  - name: vm2
    host: hv
    nic: nic0
    mac: "02:00:00:00:01:02"
    address: 198.19.0.20/24
    mtu: 9000
    memory_reserved: false
    nic_mode: emulation
    policy: {mac_change: true, vlans: [7, "100-199", " 300 - 301 "], antispoof: false}
"""


def test_an_emulated_nic_without_link_uses_the_first_interface(tmp_path: Path) -> None:
    topo = load_topology(_write(tmp_path, GUESTS))
    nic0, nic1 = topo.hosts[0].nics
    assert (nic0.link, nic1.link) == ("up0", "up1")
    assert topo.hosts[0].nic("nic1") is nic1
    assert topo.hosts[0].nic("nic9") is None


def test_guest_defaults_and_their_nic_and_switch(tmp_path: Path) -> None:
    topo = load_topology(_write(tmp_path, GUESTS))
    vm1, vm2 = topo.guests
    assert (vm1.nic, vm1.mtu, vm1.memory_reserved, vm1.nic_mode) == (None, 1500, True, "npa")
    assert vm1.policy.port_policy() == PortPolicy()
    # vm1: the first NIC with VFs (nic1, on up1 -> sw1); vm2 names nic0 (on up0 -> sw0).
    assert topo.guest_nic(vm1) is topo.hosts[0].nics[1]
    assert topo.guest_switch(vm1) == "sw1"
    assert topo.guest_nic(vm2) is topo.hosts[0].nics[0]
    assert topo.guest_switch(vm2) == "sw0"
    assert topo.guest("vm2") is vm2
    assert topo.emulated_guests() == [vm1, vm2]
    with pytest.raises(KeyError, match=r"no guest 'vm3' in lab 't' \(guests: vm1, vm2\)"):
        topo.guest("vm3")


def test_guest_policy_becomes_the_emulators_port_policy(tmp_path: Path) -> None:
    vm2 = load_topology(_write(tmp_path, GUESTS)).guests[1]
    assert vm2.policy.vlans == ("7-7", "100-199", "300-301")
    assert vm2.policy.port_policy() == PortPolicy(
        mac_change=True,
        vlans=((7, 7), (100, 199), (300, 301)),
        antispoof=False,
        mtu_max=9000,
    )
    no_vlans = GUESTS.replace('vlans: [7, "100-199", " 300 - 301 "]', "vlans: []")
    policy = load_topology(_write(tmp_path, no_vlans)).guests[1].policy.port_policy()
    assert policy.vlans == ()


def test_a_guest_on_a_host_without_vfs_falls_back_to_its_first_nic(tmp_path: Path) -> None:
    text = GUESTS.replace("vfs: 2, ", "").replace("198.19.1.10/24", "198.19.0.10/24")
    topo = load_topology(_write(tmp_path, text))
    assert topo.guest_nic(topo.guests[0]) is topo.hosts[0].nics[0]
    bare = MINIMAL.replace("  - name: h1\n", "  - name: h1\n    role: hypervisor\n") + (
        'guests: [{name: g1, host: h1, mac: "02:00:00:00:01:01", address: 198.19.0.9/24}]\n'
    )
    topo = load_topology(_write(tmp_path, bare))
    assert topo.guest_nic(topo.guests[0]) is None
    assert topo.guest_switch(topo.guests[0]) is None


@pytest.mark.parametrize(
    ("vlan", "message"),
    [
        ("0", "expected VLAN ids from 1 to 4094 with the lower one first, got '0'"),
        ('"200-100"', "with the lower one first, got '200-100'"),
        ('"1-2-3"', "expected a VLAN id or a range like '100-199', got '1-2-3'"),
        ("true", "got the boolean true"),
        ("1.5", "got a number with a decimal point"),
        ("{a: 1}", "got a list or mapping"),
    ],
)
def test_a_bad_vlan_is_one_located_issue(tmp_path: Path, vlan: str, message: str) -> None:
    text = GUESTS.replace('vlans: [7, "100-199", " 300 - 301 "]', f"vlans: [7, {vlan}]")
    with pytest.raises(TopologyError) as info:
        load_topology(_write(tmp_path, text))
    (issue,) = info.value.issues
    assert format_path(issue.path) == "guests[1].policy.vlans[1]"
    assert issue.position is not None and issue.position.line == 22
    assert message in issue.message


def test_capabilities_count_guests_and_name_nic_models(tmp_path: Path) -> None:
    caps = load_topology(_write(tmp_path, GUESTS)).capabilities()
    assert {"guests", "guests:1", "guests:2", "nic:sriov", "nic:alpha-10g", "nic:beta-25g"} <= caps
    assert not {"guests:3", "nic:fpga-nic"} & caps


def test_guests_take_management_addresses_too(tmp_path: Path) -> None:
    # A /28 has room for 5 machines after the bench's 10 addresses: 1 host + 2 guests fit...
    small = GUESTS.replace("lab: {name: t}", "lab: {name: t, management: 198.18.5.0/28}")
    load_topology(_write(tmp_path, small))
    # ... and 1 host + 5 guests do not.
    more = "".join(
        f'  - {{name: vm{n}, host: hv, mac: "02:00:00:00:02:0{n}", '
        f"address: 198.19.1.{20 + n}/24}}\n"
        for n in range(3, 6)
    )
    with pytest.raises(TopologyError) as info:
        load_topology(_write(tmp_path, small.replace("  - name: vm2\n", more + "  - name: vm2\n")))
    (issue,) = info.value.issues
    assert format_path(issue.path) == "lab.management"
    assert "room for the 1 emulated hosts and their 5 guests" in issue.message


def test_a_failover_guest_is_accepted_on_a_lab_host(tmp_path: Path) -> None:
    text = """\
lab: {name: t}
switches: [{name: sw0, subnet: 198.19.0.0/24}]
hosts:
  - name: kvm
    backend: lab
    role: hypervisor
    ssh: {address: kvm.example, key: k, known_hosts: kh}
    interfaces: [{name: ens1, switch: sw0, address: 198.19.0.1/24}]
    nics: [{name: e810, pci: "0000:3b:00.0", vfs: 4}]
guests:
  - {name: vm1, host: kvm, mac: "02:00:00:00:01:01", address: 198.19.0.9/24, nic_mode: failover}
"""
    topo = load_topology(_write(tmp_path, text))
    assert topo.hosts[0].nics[0].link is None, "only emulated NICs get a default uplink"
    assert topo.emulated_guests() == []
