"""Latency tables: `deploykit profile` rows and the --latency part of the conformance summary."""

from __future__ import annotations

import math
from collections import defaultdict

from rich.console import Console
from rich.table import Table
from rich.text import Text

from deploykit.result import Result
from deploykit.report.cells import fmt


def profile_table(rows: list, console: Console, source: str) -> None:
    table = Table(title=f"Latency: {source}", title_justify="left")
    for column in ("backend", "batch", "median ms", "p90 ms", "p99 ms", "CV", "samples", "inf/s", "GFLOP/s", "setup ms", "threads"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    notes = []
    for row in rows:
        if row.status != "ok":
            table.add_row(row.backend, str(row.batch), row.status, *[""] * 8)
            notes.append(f"{row.backend} (batch {row.batch}): {row.status}: {row.reason}")
            continue
        table.add_row(
            row.backend, str(row.batch), fmt(row.median_ms, ".4g"), fmt(row.p90_ms, ".4g"), fmt(row.p99_ms, ".4g"),
            fmt(row.cv, ".1%"), str(row.samples), fmt(row.throughput_per_s, ".4g"), fmt(row.gflops, ".3g"),
            fmt(row.setup_ms, ".4g"), str(row.threads or "-"),
        )
        notes.extend(f"{row.backend} (batch {row.batch}): warning: {w}" for w in row.warnings)
    console.print(table)
    for note in notes:
        console.print(Text(note))


def latency_summary(results: list[Result], console: Console, slowest: int = 3) -> None:
    """Slowest configs per backend and each backend's speed relative to the fastest per config."""
    timed = [r for r in results if r.latency_median_ms is not None]
    if not timed:
        return
    by_backend: dict[str, list[Result]] = defaultdict(list)
    by_config: dict[str, list[Result]] = defaultdict(list)
    for r in timed:
        by_backend[r.backend_label].append(r)
        by_config[r.config_id].append(r)
    ratios: dict[str, list[float]] = defaultdict(list)
    wins: dict[str, int] = defaultdict(int)
    for rows in by_config.values():
        if len(rows) < 2:
            continue
        fastest = min(r.latency_median_ms for r in rows)
        for r in rows:
            ratios[r.backend_label].append(r.latency_median_ms / fastest)
            wins[r.backend_label] += r.latency_median_ms == fastest
    speed = Table(title="Speed relative to the fastest backend on the same config (geometric mean; 1.0 = fastest)", title_justify="left")
    for column in ("backend", "configs timed", "x fastest", "fastest on", "noisy (CV > 2.5%)"):
        speed.add_column(column, justify="left" if column == "backend" else "right")
    for backend, rows in by_backend.items():
        values = ratios.get(backend)
        mean = math.exp(sum(math.log(v) for v in values) / len(values)) if values else None
        noisy = sum((r.latency_cv or 0) > 0.025 for r in rows)
        speed.add_row(backend, str(len(rows)), fmt(mean, ".3g"), str(wins.get(backend, 0)), str(noisy))
    console.print(speed)
    slow = Table(title=f"Slowest {slowest} configs per backend", title_justify="left")
    for column in ("backend", "config", "median ms", "p99 ms", "CV", "GFLOP/s", "setup ms"):
        slow.add_column(column, justify="left" if column in ("backend", "config") else "right")
    for backend, rows in by_backend.items():
        for r in sorted(rows, key=lambda r: -r.latency_median_ms)[:slowest]:
            slow.add_row(
                backend, r.label, fmt(r.latency_median_ms, ".4g"), fmt(r.latency_p99_ms, ".4g"),
                fmt(r.latency_cv, ".1%"), fmt(r.gflops, ".3g"), fmt(r.setup_ms, ".4g"),
            )
    console.print(slow)
