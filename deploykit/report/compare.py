"""The comparison of two runs, for a terminal and for a CI job summary (Markdown)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from deploykit.compare import Comparison

_SECTIONS = (("regressions", "Regressions"), ("slowdowns", "Latency slowdowns"),
             ("ratio_growth", "bound_ratio growth (still within the bound)"), ("fixes", "Fixes"))


def headline(comparison: Comparison) -> str:
    counts = (f"{len(comparison.regressions)} verdict regression(s), {len(comparison.slowdowns)} slowdown(s),"
              f" {len(comparison.ratio_growth)} bound_ratio growth(s), {len(comparison.fixes)} fix(es)")
    return (f"{'REGRESSED' if comparison.regressed else 'no regression'}: {counts} over {comparison.shared} shared results;"
            f" {len(comparison.added)} added, {len(comparison.missing)} missing")


def print_comparison(comparison: Comparison, console: Console) -> None:
    console.print(Text(f"baseline {comparison.baseline} vs current {comparison.current}"))
    for note in comparison.notes:
        console.print(Text(f"note: {note}"))
    for attribute, title in _SECTIONS:
        changes = getattr(comparison, attribute)
        if not changes:
            continue
        table = Table(title=title, title_justify="left")
        for column in ("config", "backend", "before", "after", "detail"):
            table.add_column(column, overflow="fold")
        for change in changes:
            table.add_row(change.label, change.backend, change.before, change.after, Text(change.detail))
        console.print(table)
    for attribute in ("added", "missing"):
        items = getattr(comparison, attribute)
        if items:
            console.print(Text(f"{attribute} ({len(items)}): " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else "")))
    console.print(Text(headline(comparison)))


def comparison_markdown(comparison: Comparison) -> str:
    mark = "❌" if comparison.regressed else "✅"
    lines = [f"### deploykit compare: {mark} {headline(comparison)}", "",
             f"Baseline `{comparison.baseline}`, current `{comparison.current}`.", ""]
    lines += [f"> {note}" for note in comparison.notes]
    for attribute, title in _SECTIONS:
        changes = getattr(comparison, attribute)
        if changes:
            lines += ["", f"#### {title}", "", "| config | backend | before | after | detail |", "|---|---|---|---|---|"]
            lines += [f"| {c.label} | {c.backend} | {c.before} | {c.after} | {' '.join(c.detail.split()).replace('|', '/')} |"
                      for c in changes]
    return "\n".join(lines) + "\n"
