"""``requires``: skip unless the lab provides it; an unknown capability is a collection error."""

from __future__ import annotations

from typing import get_args

import pytest

from bench.capabilities import REALISED, is_known, provided_capabilities, unmet
from bench.results import read_results
from bench.topology import Host, load_topology
from tests.plugin.conftest import EMULATED, FULL, REAL, RunBench

pytest_plugins = ["pytester"]

SUITE = """
from typing import get_args

import pytest

@pytest.mark.requires("hosts:3", "role:hypervisor", "role:traffic-generator")
def test_runs_on_three_hosts():
    pass

@pytest.mark.requires("backend:emulated")
def test_runs_on_emulated():
    pass

@pytest.mark.requires("hosts:9")
def test_needs_nine_hosts():
    pass

@pytest.mark.requires("nic:sriov")
def test_needs_vfs():
    pass

@pytest.mark.requires("guests")
def test_needs_guests():
    pass

@pytest.mark.requires("instrument:power-supply")
def test_needs_a_power_supply():
    pass

@pytest.mark.requires("backend:lab")
def test_needs_real_hosts():
    pass
"""


def _reasons(pytester: pytest.Pytester) -> dict[str, tuple[str, str]]:
    results = read_results(pytester.path / "results.jsonl")
    return {r.nodeid.split("::")[-1]: (r.outcome, r.message) for r in results}


def test_a_capability_the_topology_lacks_skips_naming_it(
    run_bench: RunBench, pytester: pytest.Pytester
) -> None:
    run_bench(SUITE, EMULATED).assert_outcomes(passed=5, skipped=2)
    reasons = _reasons(pytester)
    for name in (
        "test_runs_on_three_hosts",
        "test_runs_on_emulated",
        "test_needs_a_power_supply",
        "test_needs_vfs",
        "test_needs_guests",
    ):
        assert reasons[name] == ("passed", ""), name
    for name, cap in [
        ("test_needs_nine_hosts", "hosts:9"),
        ("test_needs_real_hosts", "backend:lab"),
    ]:
        assert reasons[name] == ("skipped", f"topology lab 'emu' lacks {cap}")


def test_a_capability_declared_but_not_provided_yet_skips_saying_so(
    run_bench: RunBench, pytester: pytest.Pytester
) -> None:
    # Real lab hosts declare SR-IOV NICs; the bench drives real NICs only later.
    run_bench(SUITE, REAL).assert_outcomes(passed=3, skipped=4)
    reasons = _reasons(pytester)
    assert reasons["test_runs_on_three_hosts"] == ("passed", "")
    assert reasons["test_needs_a_power_supply"] == ("passed", "")
    assert reasons["test_needs_real_hosts"] == ("passed", "")
    for name, cap in [
        ("test_needs_nine_hosts", "hosts:9"),
        ("test_needs_guests", "guests"),
        ("test_runs_on_emulated", "backend:emulated"),
    ]:
        assert reasons[name] == ("skipped", f"topology lab 'lab1' lacks {cap}")
    outcome, message = reasons["test_needs_vfs"]
    assert outcome == "skipped"
    assert message == (
        "topology lab 'lab1' declares nic:sriov but its backend (lab) cannot provide "
        "it yet (not provided by this bench yet)"
    )


def test_requires_markers_of_module_class_and_function_all_count(
    run_bench: RunBench, pytester: pytest.Pytester
) -> None:
    run_bench(
        """
from typing import get_args

import pytest

pytestmark = pytest.mark.requires("hosts:2")

@pytest.mark.requires("nic:sriov")
class TestVfs:
    @pytest.mark.requires("hosts:9")
    def test_both_missing(self):
        pass

def test_module_level_only():
    pass
""",
        REAL,
    ).assert_outcomes(passed=1, skipped=1)
    outcome, message = _reasons(pytester)["test_both_missing"]
    assert outcome == "skipped"
    assert "lacks hosts:9" in message and "declares nic:sriov" in message


def test_without_a_topology_requires_skips_as_needing_a_lab(
    run_bench: RunBench, pytester: pytest.Pytester
) -> None:
    run_bench(SUITE, None).assert_outcomes(skipped=7)
    assert {m for _, m in _reasons(pytester).values()} == {"needs a lab: no --topology given"}


@pytest.mark.parametrize("bad", ["host:2", "hosts:two", "hosts:0", "role:hypervsor", "nic:vf"])
def test_an_unknown_capability_is_a_collection_error_naming_test_and_string(
    run_bench: RunBench, pytester: pytest.Pytester, bad: str
) -> None:
    run = run_bench(
        f"""
from typing import get_args

import pytest

def test_fine():
    pass

@pytest.mark.requires("hosts:1", {bad!r})
def test_typo():
    pass
""",
        EMULATED,
    )
    assert run.ret == pytest.ExitCode.INTERRUPTED
    run.assert_outcomes(errors=1)
    run.stdout.fnmatch_lines(
        [f"*test_suite.py::test_typo: unknown capability {bad!r} in @pytest.mark.requires*"]
    )
    assert read_results(pytester.path / "results.jsonl") == [], "nothing ran"


def test_an_unknown_capability_is_an_error_even_without_a_topology(
    run_bench: RunBench,
) -> None:
    run = run_bench(
        'import pytest\n\n@pytest.mark.requires("gpus")\ndef test_x():\n    pass\n', None
    )
    assert run.ret == pytest.ExitCode.INTERRUPTED
    run.stdout.fnmatch_lines(["*test_x: unknown capability 'gpus'*", "*known capabilities:*"])


def test_provided_capabilities_keep_only_what_the_backends_realise() -> None:
    emulated = load_topology(EMULATED)
    assert provided_capabilities(emulated) == emulated.capabilities()
    assert {"nic:sriov", "nic:alpha-10g", "guests", "guests:1"} <= emulated.capabilities()
    full = load_topology(FULL)
    assert {"nic:sriov", "guests", "instrument:power-supply"} <= full.capabilities()
    assert provided_capabilities(full) == full.capabilities()
    real = load_topology(REAL)
    provided = provided_capabilities(real)
    assert "backend:lab" in provided and "hosts:3" in provided
    assert not {c for c in provided if c.startswith("nic:")}
    assert {"instrument:power-supply", "instrument:optical-attenuator"} <= provided
    assert unmet(real, ["hosts:3", "backend:lab"]) is None


def test_every_backend_has_a_line_in_the_table() -> None:
    backends = get_args(Host.model_fields["backend"].annotation)
    assert set(REALISED) == set(backends)


@pytest.mark.parametrize(
    ("cap", "known"),
    [
        ("hosts:12", True),
        ("backend:lab", True),
        ("role:generic", True),
        ("instrument:optical-attenuator", True),
        ("nic:sriov", True),
        ("nic:alpha-10g", True),
        ("nic:fpga-nic", True),
        ("guests", True),
        ("guests:2", True),
        ("hosts:", False),
        ("backend:qemu", False),
        ("instrument:scope", False),
        ("nic:vf", False),
        ("nic:", False),
        ("guests:0", False),
        ("guests:", False),
        ("", False),
        (3, False),
    ],
)
def test_known_capability_forms(cap: object, known: bool) -> None:
    assert is_known(cap) is known
