"""The Markdown report, for a CI job summary (GitHub's $GITHUB_STEP_SUMMARY, GitLab's MR notes).

New findings come first, then the per-backend counts, then every other non-pass result with the
known divergence that explains it.  Laid out from a RunSummary; nothing is computed here.
"""

from __future__ import annotations

from deploykit.report.cells import fmt
from deploykit.report.escape import md, md_code
from deploykit.report.terminal import incomplete_notice, narrow_sum_line
from deploykit.results.result import Result
from deploykit.results.summary import RunSummary, is_failure


def _rows(results: list[Result]) -> list[str]:
    lines = ["| config | backend | verdict | bound_ratio | reason | known |", "|---|---|---|---:|---|---|"]
    for r in results:
        lines.append(f"| {md(r.label)} | {md(r.backend_label)} | {md(r.verdict)} | {fmt(r.bound_ratio)} |"
                     f" {md(r.reason)} | {md(r.known_divergence or '')} |")
    return lines


def to_markdown(summary: RunSummary) -> str:
    run = summary.run or {}
    mark = "❌" if summary.new_findings else ("✅" if summary.complete else "⚠️ incomplete run,")
    lines = [f"### deploykit conformance: {mark} {summary.new_findings} new finding(s)", ""]
    notice = incomplete_notice(summary)
    if notice:
        lines += [f"**{notice}**", ""]
    lines += [f"Run {md(run.get('run_id', '-'))} of matrix {md_code(run.get('matrix', '-'))}: {summary.total} results,"
              f" {summary.passed} pass, {summary.known} known divergences, {summary.new_findings} new findings.", ""]
    failures = [r for r in summary.non_pass if is_failure(r)]
    if failures:
        lines += ["#### New findings", "", *_rows(failures), ""]
    lines += ["#### Verdicts per backend", "", "| backend | " + " | ".join(map(md, summary.verdicts)) + " | known |",
              "|---|" + "---:|" * (len(summary.verdicts) + 1)]
    for row in summary.backends:
        lines.append(f"| {md(row.backend)} | " + " | ".join(str(row.verdicts.get(v, "")) for v in summary.verdicts) + f" | {row.known or ''} |")
    others = [r for r in summary.non_pass if not is_failure(r)]
    if others:
        lines += ["", "#### Other non-pass results (known divergences, documented non-support)", "", *_rows(others)]
    if summary.known_seen:
        lines += ["", "#### Known divergences seen", ""]
        lines += [f"- {md_code(entry.id)}: {md(entry.reason)} ({md(entry.upstream)})" for entry in summary.known_seen]
    if summary.narrow_sums:
        lines += ["", "#### Accumulation below float32 (not a defect)", ""]
        lines += [f"- {md(narrow_sum_line(item))}" for item in summary.narrow_sums]
    return "\n".join(lines) + "\n"
