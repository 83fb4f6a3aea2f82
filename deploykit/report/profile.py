"""The `deploykit profile` table (a run's latency tables are in terminal.py)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from deploykit.report.cells import fmt
from deploykit.report.escape import term, term_line

_COLUMNS = ("backend", "batch", "median ms", "p90 ms", "p99 ms", "CV", "samples", "inf/s", "GFLOP/s", "setup ms", "threads")
#: shown after CV when a row has GPU compute time; the latency columns are then headed "host"
_GPU_COLUMNS = ("GPU median ms", "GPU p99 ms", "GPU CV")


def _title(rows: list, source: str) -> str:
    graph = any(getattr(row, "timing_mode", "plain") == "cuda-graph" for row in rows)
    return f"Latency{' (CUDA-graph replay)' if graph else ''}: {source}"


def _gpu_cells(row) -> list[str]:
    gpu = row.gpu_compute or {}
    return [fmt(gpu.get("median_ms"), ".4g"), fmt(gpu.get("p99_ms"), ".4g"), fmt(gpu.get("cv"), ".1%")]


def profile_table(rows: list, console: Console, source: str) -> None:
    """One row per backend and batch.  GPU backends' rows carry two figures, after trtexec: the host
    latency of the whole call (median, p90, p99, CV) and the GPU compute time (GPU columns, shown
    only when some row has it); a GPU row without GPU compute time says why in a note."""
    gpu = any(getattr(row, "gpu_compute", None) for row in rows)
    host = tuple(f"host {name}" for name in _COLUMNS[2:6]) if gpu else _COLUMNS[2:6]
    columns = _COLUMNS[:2] + host + (_GPU_COLUMNS if gpu else ()) + _COLUMNS[6:]
    table = Table(title=term_line(_title(rows, source)), title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column == "backend" else "right")
    notes = []
    for row in rows:
        if row.status != "ok":
            table.add_row(term(row.backend), str(row.batch), term(row.status), *[""] * (len(columns) - 3))
            notes.append(f"{row.backend} (batch {row.batch}): {row.status}: {row.reason}")
            continue
        host_cells = [fmt(row.median_ms, ".4g"), fmt(row.p90_ms, ".4g"), fmt(row.p99_ms, ".4g"), fmt(row.cv, ".1%")]
        rest = [str(row.samples), fmt(row.throughput_per_s, ".4g"), fmt(row.gflops, ".3g"), fmt(row.setup_ms, ".4g"),
                str(row.threads or "-")]
        table.add_row(term(row.backend), str(row.batch), *host_cells, *(_gpu_cells(row) if gpu else []), *rest)
        if getattr(row, "gpu_compute_note", None):
            notes.append(f"{row.backend} (batch {row.batch}): {row.gpu_compute_note}")
        notes.extend(f"{row.backend} (batch {row.batch}): warning: {w}" for w in row.warnings)
    console.print(table)
    for note in notes:
        console.print(term_line(note))
