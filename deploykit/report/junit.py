"""JUnit XML of a run, for CI test reports (GitHub, GitLab, Jenkins, Azure render it).

One testcase per (config, backend, precision): a new finding is a <failure>; a known divergence is
<skipped> with its id and upstream link, as are documented non-support and missing runtimes; a pass
is an empty testcase.  The testsuite says whether the run is complete, and its properties carry the
run id and the environment.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from deploykit.report.escape import xml
from deploykit.results.result import Result
from deploykit.results.summary import RunSummary, is_failure


def _message(text: str) -> str:
    """An attribute a CI page shows in one line: at most 1000 characters, and XML 1.0 can carry it."""
    return xml(text[:1000])


def _testcase(result: Result, by_id: dict) -> ET.Element:
    case = ET.Element("testcase", {
        "classname": xml(f"deploykit.{result.backend}.{result.precision}"),
        "name": xml(result.label),
        "time": f"{(result.duration_ms or 0.0) / 1e3:.6f}",
    })
    if is_failure(result):
        message = _message(f"{result.verdict}: {result.reason}")
        failure = ET.SubElement(case, "failure", {"type": xml(result.verdict), "message": message})
        where = f"config {result.config_id} ({result.label}) on {result.backend_label}"
        failure.text = xml(f"{where}: {result.verdict}\n{result.reason}")
    elif result.known_divergence:
        entry = by_id.get(result.known_divergence)
        upstream = f" ({entry.upstream})" if entry and entry.upstream else ""
        message = _message(f"known divergence {result.known_divergence}{upstream}: {result.reason}")
        ET.SubElement(case, "skipped", {"message": message})
    elif result.verdict != "pass":
        ET.SubElement(case, "skipped", {"message": _message(f"{result.verdict}: {result.reason}")})
    return case


def to_junit(summary: RunSummary, results: list[Result], known: list) -> str:
    """The JUnit document as text."""
    by_id = {entry.id: entry for entry in known}
    run = summary.run or {}
    suite = ET.Element("testsuite", {
        "name": xml(f"deploykit conformance: {run.get('matrix', 'run')}"),
        "tests": str(len(results)),
        "failures": str(summary.new_findings),
        "errors": "0",
        "skipped": str(sum(1 for r in results if r.verdict != "pass" and not is_failure(r))),
        "time": f"{sum((r.duration_ms or 0.0) for r in results) / 1e3:.3f}",
    })
    properties = ET.SubElement(suite, "properties")
    for name, value in (("run_id", run.get("run_id")), ("complete", summary.complete),
                        ("planned", run.get("planned")), ("recorded", summary.total)):
        ET.SubElement(properties, "property", {"name": name, "value": xml(value)})
    for name, value in sorted((run.get("environment") or {}).get("packages", {}).items()):
        ET.SubElement(properties, "property", {"name": xml(f"package.{name}"), "value": xml(value)})
    for result in results:
        suite.append(_testcase(result, by_id))
    suites = ET.Element("testsuites", {"name": "deploykit", "tests": suite.attrib["tests"],
                                       "failures": suite.attrib["failures"], "skipped": suite.attrib["skipped"]})
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
