"""`deploykit conformance report`, `compare` and `merge`: stored runs shown, compared and joined."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from deploykit.cli.app import DIVERGENCE_TABLE, conformance_app, stdout
from deploykit.cli.options import db_option, json_option
from deploykit.cli.shared import (
    check_writable_file,
    render,
    say,
    sigterm_as_interrupt,
    summarize_run,
    write_json,
    write_text,
)
from deploykit.errors import RunAborted, RunInterrupted, UsageError
from deploykit.outputs import check_paths


@conformance_app.command("report")
@db_option()
@click.option("--format", "format_", default="table", show_default=True, type=click.Choice(["table", "json", "md", "junit", "html"]))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="write here instead of stdout")
@click.option("--run", "run_id", type=int, default=None, help="run id (default: the latest)")
def conformance_report(db: Path, format_: str, output: Path | None, run_id: int | None) -> None:
    """Report a stored run: a table, JSON, Markdown (CI job summaries), JUnit XML or a self-contained HTML page."""
    from deploykit.results.store import Store

    check_paths(inputs=DIVERGENCE_TABLE, databases={"--db": db}, outputs={"-o": output})
    store = Store(db, create=False)
    try:
        runs = store.runs()
        if not runs:
            raise UsageError(f"{db} holds no runs yet")
        chosen = next((r for r in runs if r.run_id == run_id), None) if run_id is not None else runs[-1]
        if chosen is None:
            raise UsageError(f"no run {run_id} in {db}; runs: {', '.join(str(r.run_id) for r in runs)}")
        results = store.results(chosen.run_id)
    finally:
        store.close()
    summary, known = summarize_run(chosen, results)
    text = render(summary, results, known, format_)
    if output:
        write_text(output, text)
    else:
        sys.stdout.write(text)


@conformance_app.command("compare")
@click.option("--baseline", required=True, type=click.Path(path_type=Path), help="a results database or a JSON report")
@click.option("--baseline-run", type=int, default=None, help="run id in a baseline database (default: its latest)")
@db_option("the current results")
@click.option("--run", "run_id", type=int, default=None, help="run id in --db (default: the latest)")
@click.option("--ratio-growth", type=click.FloatRange(min=1), default=10.0, show_default=True, help="bound_ratio growth worth reporting")
@click.option("--strict-ratio", is_flag=True, help="count bound_ratio growth as a regression too")
@click.option("--sigmas", type=click.FloatRange(min=0), default=3.0, show_default=True,
    help="latency slowdown threshold, in standard deviations of both sides' spread")
@click.option("--no-latency", is_flag=True, help="do not compare latency")
@click.option("--format", "format_", default="table", show_default=True, type=click.Choice(["table", "md"]))
@json_option("also write the comparison as JSON")
def conformance_compare(baseline: Path, baseline_run: int | None, db: Path, run_id: int | None, ratio_growth: float,
                        strict_ratio: bool, sigmas: float, no_latency: bool, format_: str, json_path: Path | None) -> None:
    """Compare the current run with a baseline; exit 1 on any regression."""
    import dataclasses

    from deploykit.report.compare import comparison_markdown, print_comparison
    from deploykit.results.compare import compare, load_side

    check_paths(databases={"--baseline": baseline, "--db": db}, outputs={"--json": json_path})
    for option, value in (("--ratio-growth", ratio_growth), ("--sigmas", sigmas)):
        if not math.isfinite(value):
            raise UsageError(f"{option} {value:g} must be a finite number")
    if json_path:
        check_writable_file(json_path, "--json")
    result = compare(load_side(baseline, baseline_run, "--baseline-run"), load_side(db, run_id), ratio_growth, sigmas,
                     not no_latency, strict_ratio)
    if json_path:  # written before the report is laid out: a rendering failure must not lose it
        write_json(json_path, {**dataclasses.asdict(result), "regressed": result.regressed, "complete": not result.incomplete})
    if format_ == "md":
        sys.stdout.write(comparison_markdown(result))
    else:
        print_comparison(result, stdout)
    if result.incomplete:  # exit 2, not 1: no verdict on the whole run was possible, so none is claimed
        raise UsageError(f"the comparison is INCOMPLETE: {'; '.join(result.incomplete)}; compare whole, finished runs")
    sys.exit(1 if result.regressed else 0)


@conformance_app.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="the merged results database (new)")
def conformance_merge(shards: tuple[Path, ...], output: Path) -> None:
    """Join the shards of one run (`conformance run --shard K/N` on N jobs) into one database."""
    from deploykit.results.merge import merge

    check_paths(databases={"SHARDS": shards}, outputs={"-o": output})
    with sigterm_as_interrupt():
        try:
            outcome = merge(list(shards), output)
        except KeyboardInterrupt:  # the merge writes beside -o and links it into place only when whole
            done = "was written whole just before" if output.exists() else "was not created"
            raise RunInterrupted(f"interrupted; -o {output} {done}", resumable=False) from None
    say(f"merged shard(s) {', '.join(map(str, outcome.merged))} of {outcome.count}: {outcome.results} results in"
         f" {output} (run {outcome.run_id})")
    if outcome.missing or outcome.incomplete:
        gaps = [f"missing shard {i}/{outcome.count}" for i in outcome.missing]
        gaps += [f"shard {i}/{outcome.count} did not finish" for i in outcome.incomplete]
        raise RunAborted(f"the merged run in {output} is incomplete: {'; '.join(gaps)}")
