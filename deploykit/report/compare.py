"""The comparison of two runs, for a terminal and for a CI job summary (Markdown)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from deploykit.report.escape import md, md_code, term, term_line
from deploykit.results.compare import Comparison

_SECTIONS = (("regressions", "Regressions"), ("slowdowns", "Latency slowdowns"),
             ("ratio_growth", "bound_ratio growth (still within the bound)"), ("fixes", "Fixes"))


def _status(comparison: Comparison) -> str:
    """INCOMPLETE first: a comparison of part of a run is no verdict, whatever the shared results show."""
    words = (["INCOMPLETE"] if comparison.incomplete else []) + (["REGRESSED"] if comparison.regressed else [])
    return ", ".join(words) or "no regression"


def headline(comparison: Comparison) -> str:
    counts = (f"{len(comparison.regressions)} verdict regression(s), {len(comparison.slowdowns)} slowdown(s),"
              f" {len(comparison.ratio_growth)} bound_ratio growth(s), {len(comparison.fixes)} fix(es)")
    return (f"{_status(comparison)}: {counts} over {comparison.shared} shared results;"
            f" {len(comparison.added)} added, {len(comparison.missing)} missing")


def print_comparison(comparison: Comparison, console: Console) -> None:
    console.print(term_line(f"baseline {comparison.baseline} vs current {comparison.current}"))
    for gap in comparison.incomplete:
        console.print(Text("INCOMPLETE: ", style="bold") + term_line(gap))
    for note in comparison.notes:
        console.print(term_line(f"note: {note}"))
    for attribute, title in _SECTIONS:
        changes = getattr(comparison, attribute)
        if not changes:
            continue
        table = Table(title=title, title_justify="left")
        for column in ("config", "backend", "before", "after", "detail"):
            table.add_column(column, overflow="fold")
        for change in changes:
            table.add_row(term(change.label), term(change.backend), term(change.before), term(change.after), term(change.detail))
        console.print(table)
    for attribute in ("added", "missing"):
        items = getattr(comparison, attribute)
        if items:
            console.print(term_line(f"{attribute} ({len(items)}): " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else "")))
    console.print(term_line(headline(comparison)))


def comparison_markdown(comparison: Comparison) -> str:
    mark = "❌" if comparison.regressed else ("⚠️" if comparison.incomplete else "✅")
    lines = [f"### deploykit compare: {mark} {headline(comparison)}", "",
             f"Baseline {md_code(comparison.baseline)}, current {md_code(comparison.current)}.", ""]
    for gap in comparison.incomplete:
        lines += [f"**INCOMPLETE: {md(gap)}**", ""]
    lines += [f"> {md(note)}" for note in comparison.notes]
    for attribute, title in _SECTIONS:
        changes = getattr(comparison, attribute)
        if changes:
            lines += ["", f"#### {title}", "", "| config | backend | before | after | detail |", "|---|---|---|---|---|"]
            lines += [f"| {md(c.label)} | {md(c.backend)} | {md(c.before)} | {md(c.after)} | {md(c.detail)} |" for c in changes]
    return "\n".join(lines) + "\n"
