"""The `deploykit profile` table (a run's latency tables are in terminal.py)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from deploykit.report.cells import fmt
from deploykit.report.escape import term, term_line


def profile_table(rows: list, console: Console, source: str) -> None:
    table = Table(title=term_line(f"Latency: {source}"), title_justify="left")
    for column in ("backend", "batch", "median ms", "p90 ms", "p99 ms", "CV", "samples", "inf/s", "GFLOP/s", "setup ms", "threads"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    notes = []
    for row in rows:
        if row.status != "ok":
            table.add_row(term(row.backend), str(row.batch), term(row.status), *[""] * 8)
            notes.append(f"{row.backend} (batch {row.batch}): {row.status}: {row.reason}")
            continue
        table.add_row(
            term(row.backend), str(row.batch), fmt(row.median_ms, ".4g"), fmt(row.p90_ms, ".4g"), fmt(row.p99_ms, ".4g"),
            fmt(row.cv, ".1%"), str(row.samples), fmt(row.throughput_per_s, ".4g"), fmt(row.gflops, ".3g"),
            fmt(row.setup_ms, ".4g"), str(row.threads or "-"),
        )
        notes.extend(f"{row.backend} (batch {row.batch}): warning: {w}" for w in row.warnings)
    console.print(table)
    for note in notes:
        console.print(term_line(note))
