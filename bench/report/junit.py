"""JUnit XML for CI systems: attachments (pcaps, timelines) added to pytest's file, or the
whole file written from the results when pytest never wrote one (a crashed run).

Attachments follow the convention CI servers read (Jenkins' JUnit attachments):
a ``[[ATTACHMENT|/absolute/path]]`` line in the test case's ``system-out``, and
an ``attachment`` property with the path relative to the report directory.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from bench.results import TestResult

#: Files of a test's artifacts a CI system should keep with the test case.
ATTACHED_SUFFIXES = (".pcap", ".pcapng")


def junit_name(nodeid: str) -> tuple[str, str]:
    """(classname, name) as pytest's junitxml writes them for ``nodeid``."""
    path, *names = nodeid.replace("::()", "").split("::")
    module = path.removesuffix(".py").replace("/", ".")
    return ".".join([module, *names[:-1]]), names[-1] if names else path


def attachments(result: TestResult) -> list[Path]:
    """A test's captures and timelines, the files worth attaching to its test case."""
    found = [Path(t) for t in result.timelines]
    if result.artifacts and Path(result.artifacts).is_dir():
        folder = Path(result.artifacts)
        found += sorted(p for p in folder.rglob("*") if p.suffix in ATTACHED_SUFFIXES)
    return [p for p in found if p.exists()]


def _attach(case: ET.Element, files: list[Path], report_dir: Path) -> None:
    properties = case.find("properties")
    if properties is None:
        properties = ET.SubElement(case, "properties")
    for path in files:
        ET.SubElement(
            properties, "property", name="attachment", value=os.path.relpath(path, report_dir)
        )
    out = case.find("system-out")
    if out is None:
        out = ET.SubElement(case, "system-out")
    lines = [f"[[ATTACHMENT|{path.resolve()}]]" for path in files]
    out.text = "\n".join(filter(None, [out.text or "", *lines]))


def add_attachments(junit: Path, results: list[TestResult], report_dir: Path) -> None:
    """Reference each test's pcaps and timelines from its test case in ``junit``."""
    tree = ET.parse(junit)
    by_name = {junit_name(r.nodeid): r for r in results}
    for case in tree.getroot().iter("testcase"):
        result = by_name.get((case.get("classname", ""), case.get("name", "")))
        files = attachments(result) if result is not None else []
        if files:
            _attach(case, files, report_dir)
    tree.write(junit, encoding="utf-8", xml_declaration=True)


def write_junit(junit: Path, results: list[TestResult], lab: str, report_dir: Path) -> None:
    """A JUnit file from the results alone, for a run whose pytest died before writing one."""
    failed = sum(r.outcome == "failed" for r in results)
    errors = sum(r.outcome == "error" for r in results)
    skipped = sum(r.outcome in ("skipped", "xfailed") for r in results)
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="npabench",
        tests=str(len(results)),
        failures=str(failed),
        errors=str(errors),
        skipped=str(skipped),
        time=f"{sum(r.duration for r in results):.3f}",
    )
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="lab", value=lab)
    ET.SubElement(properties, "property", name="incomplete", value="pytest wrote no junit.xml")
    for r in results:
        classname, name = junit_name(r.nodeid)
        case = ET.SubElement(
            suite, "testcase", classname=classname, name=name, time=f"{r.duration:.3f}"
        )
        case_properties = ET.SubElement(case, "properties")
        for catalogue_id in r.catalogue:
            ET.SubElement(case_properties, "property", name="catalogue", value=catalogue_id)
        kind = {"failed": "failure", "error": "error", "skipped": "skipped", "xfailed": "skipped"}
        if r.outcome in kind:
            ET.SubElement(case, kind[r.outcome], message=r.message)
        files = attachments(r)
        if files:
            _attach(case, files, report_dir)
    ET.ElementTree(suites).write(junit, encoding="utf-8", xml_declaration=True)
