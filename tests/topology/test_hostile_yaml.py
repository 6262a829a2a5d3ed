"""Aliases that loop or explode, and nesting too deep: one located issue, never a crash.

A topology file is input from a user: ``a: &x [*x]`` or a "billion laughs"
must end in a TopologyError quickly, not in a RecursionError or a hung
machine.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from bench.topology import TopologyError, load_topology
from bench.topology.issues import format_path
from bench.topology.source import MAX_DEPTH, MAX_VALUES

HEAD = "lab: {name: t}\nhosts: [{name: h1}]\n"
CYCLE = "an alias refers to a node that contains it"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _one_issue(path: Path) -> tuple[int, int, str, str]:
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    (issue,) = info.value.issues
    assert issue.position is not None
    return issue.position.line, issue.position.column, format_path(issue.path), issue.message


@pytest.mark.parametrize(
    "text",
    ["a: &x [*x]\n", "a: &m {<<: *m}\n", "a: &m {b: *m}\n", "a: &m {<<: &n {<<: *m}}\n"],
    ids=["list", "merge", "mapping", "merge-of-merge"],
)
def test_pyyaml_composes_a_cycle_without_recursing(text: str) -> None:
    # The composer registers an anchor before composing what it holds, so an
    # alias inside returns the node itself: a finite graph with a loop. Only
    # walking it (ours, or PyYAML's flatten_mapping) could recurse forever.
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    assert isinstance(node, yaml.MappingNode)
    (_, outer), *_ = node.value
    assert isinstance(outer, yaml.SequenceNode | yaml.MappingNode)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &x [*x]\n", (3, 8, "a[0]")),
        ("a: &x [1, [2, *x]]\n", (3, 15, "a[1][1]")),
        ("a: &m {b: *m}\n", (3, 11, "a.b")),
        ("a: &m {<<: *m}\n", (3, 12, "a")),
        ("a: &m {<<: [{k: 1}, *m]}\n", (3, 21, "a")),
        ("a: &m {b: {<<: *m}}\n", (3, 16, "a.b")),
        ("a: &m {<<: {b: *m}}\n", (3, 16, "a.b")),
        ("a: &m {<<: &n {<<: *m}}\n", (3, 20, "a")),
        (
            "lab: &lab {name: t, description: *lab}\nhosts: [{name: h1}]\n",
            (1, 34, "lab.description"),
        ),
    ],
)
def test_an_alias_inside_its_own_anchor_is_one_located_issue(
    tmp_path: Path, text: str, expected: tuple[int, int, str]
) -> None:
    source = text if text.startswith("lab:") else HEAD + text
    line, column, field, message = _one_issue(_write(tmp_path, source))
    assert (line, column, field) == expected, message
    assert message.startswith(CYCLE)


def test_billion_laughs_stops_at_the_value_cap_quickly(tmp_path: Path) -> None:
    text = HEAD + "lol:\n  - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for k in range(1, 10):  # 10**10 values if expanded
        text += f"  - &l{k} [" + ", ".join([f"*l{k - 1}"] * 10) + "]\n"
    started = time.monotonic()
    line, column, field, message = _one_issue(_write(tmp_path, text))
    assert time.monotonic() - started < 20
    assert f"expands to more than {MAX_VALUES} values" in message
    assert "alias bomb" in message
    # At the alias whose expansion crossed the cap: an item of lol[4] (line 8).
    assert (line, field.rsplit("[", 1)[0]) == (8, "lol[4]")
    assert column > 5


def test_merge_keys_merging_many_times_are_checked_quickly(tmp_path: Path) -> None:
    # Each mapping merges the one before it ten times: checking the merge keys
    # naively would take 10**8 steps; it must take a few.
    text = HEAD + "x:\n  - &m0 {k: 1}\n"
    for k in range(1, 9):
        text += f"  - &m{k} {{<<: [" + ", ".join([f"*m{k - 1}"] * 10) + "]}\n"
    started = time.monotonic()
    line, column, field, message = _one_issue(_write(tmp_path, text))
    assert time.monotonic() - started < 20
    assert (line, column, field) == (3, 1, "x")
    assert message.startswith("unknown key 'x'")


def test_deep_nesting_is_a_located_issue_not_a_recursion_error(tmp_path: Path) -> None:
    depth = 5000  # far beyond Python's recursion limit
    line, column, field, message = _one_issue(
        _write(tmp_path, HEAD + "a: " + "[" * depth + "]" * depth + "\n")
    )
    # The document mapping is level 1, so the first '[' (column 4) is level 2.
    assert (line, column, field) == (3, 4 + MAX_DEPTH - 1, "")
    assert f"nested at most {MAX_DEPTH} deep" in message


def test_nesting_at_the_limit_is_fine(tmp_path: Path) -> None:
    depth = MAX_DEPTH - 1
    _, _, field, message = _one_issue(
        _write(tmp_path, HEAD + "a: " + "[" * depth + "]" * depth + "\n")
    )
    assert (field, message.split(";")[0]) == ("a", "unknown key 'a'")


def test_deep_nesting_through_aliases_is_reported_at_the_outermost_alias(tmp_path: Path) -> None:
    # Each anchor nests 30 deep and holds the one before: 120 deep in all.
    text = HEAD + "a0: &a0 " + "[" * 30 + "]" * 30 + "\n"
    for k in range(1, 5):
        text += f"a{k}: &a{k} " + "[" * 30 + f"*a{k - 1}" + "]" * 30 + "\n"
    line, column, field, message = _one_issue(_write(tmp_path, text))
    assert (line, column) == (4, 39)  # the *a0 inside a1
    assert field == "a1" + "[0]" * 30
    assert f"nested at most {MAX_DEPTH} deep" in message


def test_aliases_used_a_few_times_still_load(tmp_path: Path) -> None:
    text = """\
lab: {name: t}
switches: [{name: sw0, subnet: 198.19.0.0/24}]
hosts:
  - &h {name: h1, interfaces: [&if {name: eth0, switch: sw0}]}
  - {<<: *h, name: h2}
  - {name: h3, interfaces: [*if, {<<: *if, name: eth1}]}
"""
    topo = load_topology(_write(tmp_path, text))
    assert [h.name for h in topo.hosts] == ["h1", "h2", "h3"]
    assert [i.name for i in topo.hosts[2].interfaces] == ["eth0", "eth1"]
