"""Render results for people (rich tables, Markdown) and for machines (JSON records).

Reads only Result rows, so a report of an old database needs no runtime installed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from deploykit import divergences
from deploykit.result import Result
from deploykit.metrics import VERDICTS
from deploykit.report.cells import fmt
from deploykit.report.latency import latency_summary
from deploykit.spec import ConvTransposeSpec
from deploykit.store import Run

#: Keys every JSON record carries first (the documented contract); the rest follow.
JSON_KEYS = (
    "config_id", "label", "backend", "precision", "dtype", "verdict", "reason", "max_abs_err", "max_rel_err",
    "rel_l2_err", "max_ulp_err", "bound_ratio", "accumulation", "float32_sum_ratio", "expected_shape", "actual_shape",
    "onnx_inferred_shape", "known_divergence", "expect", "backend_version", "duration_ms",
    "latency_median_ms", "latency_p99_ms", "latency_cv", "gflops", "setup_ms", "spec",
)


def run_record(run: Run, results: list[Result]) -> dict:
    """What a report says about the run itself: above all, whether it is complete."""
    return {
        "run_id": run.run_id,
        "matrix": run.matrix,
        "status": run.status,
        "complete": run.complete,
        "planned": run.planned,
        "recorded": len(results),
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    }


def incomplete_notice(run: Run, results: list[Result]) -> str | None:
    """One line for a run that did not finish (killed, interrupted, aborted); None otherwise."""
    if run.complete:
        return None
    return (
        f"INCOMPLETE: run {run.run_id} recorded {len(results)} of {run.planned} results and did not finish;"
        " finish it with `deploykit conformance run --resume` on the same --db"
    )


def to_json_report(run: Run, results: list[Result]) -> dict:
    """The JSON report: the run (complete or not) and one record per result."""
    return {"run": run_record(run, results), "results": to_json_records(results)}


def to_json_records(results: Iterable[Result]) -> list[dict]:
    records = []
    for result in results:
        data = result.as_dict()
        records.append({key: data[key] for key in JSON_KEYS})
    return records


def _known_text(known_id: str | None, table: dict[str, divergences.Divergence]) -> str:
    if not known_id:
        return ""
    entry = table.get(known_id)
    return f"known: {known_id}" + (f" ({entry.upstream})" if entry and entry.upstream else "")


def _print_known_legend(ids: Iterable[str], table: dict[str, divergences.Divergence], console: Console) -> None:
    for known_id in sorted(set(ids)):
        entry = table.get(known_id)
        if entry:
            console.print(Text(f"  {known_id}: {entry.reason} ({entry.upstream})"))


def shape_inference_disagreements(results: Iterable[Result]) -> list[Result]:
    """One row per config where ONNX shape inference predicts another shape than the spec text."""
    seen, found = set(), []
    for r in results:
        if r.expected_shape and r.onnx_inferred_shape and r.config_id not in seen:
            seen.add(r.config_id)
            if list(r.onnx_inferred_shape) != list(r.expected_shape):
                found.append(r)
    return found


def narrow_accumulation(results: Iterable[Result]) -> list[str]:
    """One line per (backend, dtype) whose model sums in float16/bfloat16, with the evidence.

    Worth knowing before deploying (precision lost inside the backend), but within its measured
    model, so not a conformance defect.  `float32_sum_ratio > 1` is a result that one float32 sum
    could not have produced.
    """
    groups: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in results:
        if r.float32_sum_ratio is not None:
            groups[(r.backend_label, r.dtype)].append(r)
    lines = []
    for (backend, dtype), rows in sorted(groups.items()):
        beyond = [r.float32_sum_ratio for r in rows if r.float32_sum_ratio > 1]
        model = rows[0].accumulation
        if beyond:
            lines.append(
                f"{backend} {dtype}: {len(beyond)} of {len(rows)} results are beyond what one float32 sum allows"
                f" (worst {max(beyond):.3g}x): it sums in {dtype} ({model})"
            )
        else:
            seen = f"{len(rows)} result" + ("s" if len(rows) > 1 else "")
            lines.append(f"{backend} {dtype}: may sum in {dtype} ({model}); not seen in {seen} on this machine")
    return lines


def summary(results: list[Result], console: Console, worst: int = 5, run: Run | None = None) -> None:
    """Verdict counts per backend, the worst drifts, and every non-pass row with its reason."""
    notice = incomplete_notice(run, results) if run is not None else None
    if notice:
        console.print(Text(notice, style="bold"))
    known_table = {d.id: d for d in divergences.load()}
    verdicts = [v for v in VERDICTS if any(r.verdict == v for r in results)]
    counts: dict[str, Counter] = defaultdict(Counter)
    known_counts: dict[str, int] = Counter()
    for r in results:
        counts[r.backend_label][r.verdict] += 1
        if r.known_divergence:
            known_counts[r.backend_label] += 1
    table = Table(title="Verdicts per backend", title_justify="left")
    table.add_column("backend")
    for verdict in verdicts:
        table.add_column(verdict, justify="right")
    table.add_column("known", justify="right")
    for backend, counter in counts.items():
        table.add_row(backend, *(str(counter.get(v, 0) or "") for v in verdicts), str(known_counts[backend] or ""))
    console.print(table)

    # The reference backend's ratio only measures rounding its own float64 answer: not shown.
    measured = [r for r in results if r.bound_ratio is not None and r.backend != "reference"]
    measured = sorted(measured, key=lambda r: -r.bound_ratio)[:worst]
    if measured:
        drift = Table(title=f"Worst drifts (bound_ratio <= 1 passes)", title_justify="left")
        for column in ("config", "backend", "bound_ratio", "max_abs_err", "max_rel_err", "max_ulp"):
            drift.add_column(column, justify="left" if column in ("config", "backend") else "right")
        for r in measured:
            drift.add_row(r.label, r.backend_label, fmt(r.bound_ratio), fmt(r.max_abs_err), fmt(r.max_rel_err), str(r.max_ulp_err))
        console.print(drift)
    narrow = narrow_accumulation(results)
    if narrow:
        console.print("Accumulation below float32 (inside each backend's measured model, so not a defect):")
        for line in narrow:
            console.print(Text(f"  {line}"))

    findings = [r for r in results if r.verdict != "pass"]
    if findings:
        rows = Table(title="Every non-pass result", title_justify="left")
        for column in ("config", "backend", "verdict", "reason", "known"):
            rows.add_column(column, overflow="fold")
        for r in sorted(findings, key=lambda r: (r.verdict, r.label, r.backend_label)):
            rows.add_row(r.label, r.backend_label, r.verdict, Text(r.reason), r.known_divergence or "")
        console.print(rows)
        seen_known = [r.known_divergence for r in findings if r.known_divergence]
        if seen_known:
            console.print("Known divergences seen:")
            _print_known_legend(seen_known, known_table, console)

    disagreements = shape_inference_disagreements(results)
    if disagreements:
        known = divergences.load()
        console.print(f"ONNX shape inference disagrees with the spec text on {len(disagreements)} config(s):")
        for r in disagreements:
            entry = divergences.match(known, ConvTransposeSpec.from_dict(r.spec), "onnx-shape-inference", "shape-mismatch")
            note = f" (known: {entry.id}, {entry.upstream})" if entry else " (new finding)"
            console.print(Text(f"  {r.label}: infers {r.onnx_inferred_shape}, spec text {r.expected_shape}{note}"))
    latency_summary(results, console)


def to_markdown(results: list[Result], run: Run | None = None) -> str:
    known_table = {d.id: d for d in divergences.load()}
    notice = incomplete_notice(run, results) if run is not None else None
    lines = [f"**{notice}**", ""] if notice else []
    lines += [
        "| config | id | backend | precision | verdict | bound_ratio | max_abs_err | reason | known |",
        "|---|---|---|---|---|---:|---:|---|---|",
    ]
    for r in results:
        reason = r.reason.replace("|", "\\|")
        lines.append(
            f"| {r.label} | {r.config_id} | {r.backend} | {r.precision} | {r.verdict} | {fmt(r.bound_ratio)} | {fmt(r.max_abs_err)}"
            f" | {reason} | {_known_text(r.known_divergence, known_table)} |"
        )
    return "\n".join(lines) + "\n"
