"""The terminal report of a run: rich tables laid out from a RunSummary (no computing here)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from deploykit.report.cells import fmt
from deploykit.report.escape import term, term_line
from deploykit.results.summary import RunSummary


def incomplete_notice(summary: RunSummary) -> str | None:
    """One line for a run that did not finish (killed, interrupted, aborted); None otherwise."""
    run = summary.run
    if summary.complete or run is None:  # no run record counts as complete
        return None
    if run.get("kind") == "judge":  # a judged run stays unfinished when some cases had no answer
        return (f"INCOMPLETE: run {run['run_id']} judged {run['recorded']} of {run['planned']} cases; the others had no"
                " answer in the folder (or sit in a shard not merged): add them and judge again")
    if run.get("kind") == "fuzz":  # a fuzz run knows its size only when it ends, and its own command resumes it
        return (f"INCOMPLETE: fuzz run {run['run_id']} recorded {run['recorded']} results and has not finished; unless it"
                " is still running, finish it with `deploykit conformance fuzz --resume` on the same --db")
    return (
        f"INCOMPLETE: run {run['run_id']} recorded {run['recorded']} of {run['planned']} results and has not finished;"
        " unless it is still running, finish it with `deploykit conformance run --resume` on the same --db"
    )


def narrow_sum_line(item) -> str:
    if item.beyond_float32:
        return (f"{item.backend} {item.dtype}: {item.beyond_float32} of {item.results} results are beyond what one"
                f" float32 sum allows (worst {item.worst:.3g}x): it sums in {item.dtype} ({item.model})")
    seen = f"{item.results} result" + ("s" if item.results > 1 else "")
    return f"{item.backend} {item.dtype}: may sum in {item.dtype} ({item.model}); not seen in {seen} on this machine"


def print_summary(summary: RunSummary, console: Console) -> None:
    """Verdict counts per backend, the worst drifts, and every non-pass row with its reason."""
    notice = incomplete_notice(summary)
    if notice:
        console.print(Text(notice, style="bold"))
    _verdict_table(summary, console)
    _worst_drifts(summary, console)
    if summary.narrow_sums:
        console.print("Accumulation below float32 (inside each backend's measured model, so not a defect):")
        for item in summary.narrow_sums:
            console.print(term_line(f"  {narrow_sum_line(item)}"))
    _non_pass(summary, console)
    if summary.shape_inference:
        console.print(f"ONNX shape inference disagrees with the spec text on {len(summary.shape_inference)} config(s):")
        for row in summary.shape_inference:
            note = f" (known: {row.known}, {row.upstream})" if row.known else " (new finding)"
            console.print(term_line(f"  {row.label}: infers {row.inferred}, spec text {row.expected}{note}"))
    _latency(summary, console)


def _verdict_table(summary: RunSummary, console: Console) -> None:
    table = Table(title="Verdicts per backend", title_justify="left")
    table.add_column("backend")
    for verdict in summary.verdicts:
        table.add_column(verdict, justify="right")
    table.add_column("known", justify="right")
    for row in summary.backends:
        table.add_row(term(row.backend), *(str(row.verdicts.get(v, 0) or "") for v in summary.verdicts), str(row.known or ""))
    console.print(table)


def _worst_drifts(summary: RunSummary, console: Console) -> None:
    if not summary.worst_drifts:
        return
    table = Table(title="Worst drifts (bound_ratio <= 1 passes)", title_justify="left")
    for column in ("config", "backend", "bound_ratio", "max_abs_err", "max_rel_err", "max_ulp"):
        table.add_column(column, justify="left" if column in ("config", "backend") else "right")
    for r in summary.worst_drifts:
        table.add_row(term(r.label), term(r.backend_label), fmt(r.bound_ratio), fmt(r.max_abs_err), fmt(r.max_rel_err), str(r.max_ulp_err))
    console.print(table)


#: the most of a reason the terminal table shows; the database and every other format keep it whole
SHOWN_REASON = 240


def shown_reason(reason: str) -> str:
    """A reason as the terminal table shows it: a long one is cut, and says where the whole one is."""
    if len(reason) <= SHOWN_REASON:
        return reason
    return f"{reason[:SHOWN_REASON]}... ({len(reason)} characters: `conformance report --format json` shows them all)"


def _non_pass(summary: RunSummary, console: Console) -> None:
    if not summary.non_pass:
        return
    table = Table(title="Every non-pass result", title_justify="left")
    for column in ("config", "backend", "verdict", "reason", "known"):
        table.add_column(column, overflow="fold")
    for r in summary.non_pass:
        table.add_row(term(r.label), term(r.backend_label), term(r.verdict), term(shown_reason(r.reason)),
                      term(r.known_divergence or ""))
    console.print(table)
    if summary.known_seen:
        console.print("Known divergences seen:")
        for entry in summary.known_seen:
            console.print(term_line(f"  {entry.id}: {entry.reason} ({entry.upstream})"))


def _latency(summary: RunSummary, console: Console) -> None:
    if not summary.speed:
        return
    speed = Table(title="Speed relative to the fastest backend on the same config (geometric mean; 1.0 = fastest)",
                  title_justify="left")
    for column in ("backend", "configs timed", "x fastest", "fastest on", "noisy (CV > 2.5%)"):
        speed.add_column(column, justify="left" if column == "backend" else "right")
    for row in summary.speed:
        speed.add_row(term(row.backend), str(row.timed), fmt(row.times_fastest, ".3g"), str(row.fastest_on), str(row.noisy))
    console.print(speed)
    slow = Table(title="Slowest configs per backend", title_justify="left")
    for column in ("backend", "config", "median ms", "p99 ms", "CV", "GFLOP/s", "setup ms"):
        slow.add_column(column, justify="left" if column in ("backend", "config") else "right")
    for r in summary.slowest:
        slow.add_row(term(r.backend_label), term(r.label), fmt(r.latency_median_ms, ".4g"), fmt(r.latency_p99_ms, ".4g"),
                     fmt(r.latency_cv, ".1%"), fmt(r.gflops, ".3g"), fmt(r.setup_ms, ".4g"))
    console.print(slow)
