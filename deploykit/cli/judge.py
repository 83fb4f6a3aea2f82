"""`deploykit conformance judge`: outputs made elsewhere (e.g. by trtexec), judged here."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from deploykit.cli.app import DIVERGENCE_TABLE, conformance_app, stdout
from deploykit.cli.options import db_option, json_option, max_memory_option, precision_option, shard_option, tolerance_options
from deploykit.cli.shared import (
    check_writable_file,
    parse_shard_option,
    render,
    say,
    summarize_run,
    write_text,
)
from deploykit.errors import RunAborted, UsageError
from deploykit.outputs import check_paths


@conformance_app.command("judge")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--as", "backend", required=True, help="the backend whose outputs these are (any known name, installed here or not), e.g. tensorrt")
@precision_option(help="the build precision the outputs were made at")
@click.option("--version", "version", default=None, help="the runtime's version that made them (version-ranged known divergences use it)")
@db_option()
@tolerance_options
@shard_option("K/N: judge shard K of N of the cases (the split `conformance run --shard` makes)")
@json_option()
@max_memory_option()
def conformance_judge(folder: Path, backend: str, precision: str, version: str | None, db: Path, atol: float | None,
                      rtol: float | None, shard: str | None, json_path: Path | None, max_memory: str | None) -> None:
    """Judge outputs a runtime produced elsewhere (a `generate` tree with answer files); exit 1 on a new finding."""
    from deploykit.conformance.judge import JudgeRequest, judge
    from deploykit.op.judging import Tolerance

    if not all(math.isfinite(v) for v in (atol or 0.0, rtol or 0.0)):
        raise UsageError("--atol and --rtol must be finite numbers")
    answers = sorted(folder.glob("*/test_data_set_0/*")) + sorted(folder.glob("*/*.onnx")) if folder.is_dir() else []
    check_paths(inputs={"the answers in DIR": answers, **DIVERGENCE_TABLE}, databases={"--db": db}, outputs={"--json": json_path})
    if json_path:
        check_writable_file(json_path, "--json")
    tolerance = None if atol is None and rtol is None else Tolerance(atol or 0.0, rtol or 0.0)
    from deploykit.execution.resources import parse_size

    budget = parse_size(max_memory) if max_memory is not None else None
    outcome = judge(JudgeRequest(folder, backend, precision, version, db, tolerance, parse_shard_option(shard), budget))
    summary, known = summarize_run(outcome.run, outcome.results)
    from deploykit.report import print_summary

    if json_path:  # before the report is laid out: a rendering failure must not lose it
        write_text(json_path, render(summary, outcome.results, known, "json"))
    print_summary(summary, stdout)
    say(f"run {outcome.run.run_id}: {summary.total} results judged from {folder} as {backend} ({precision}),"
         f" {summary.passed} pass, {summary.known} known divergences, {summary.new_findings} new findings; stored in {db}")
    if outcome.unanswered:
        shown = ", ".join(outcome.unanswered[:3]) + (", ..." if len(outcome.unanswered) > 3 else "")
        raise RunAborted(f"run {outcome.run.run_id} in {db} is incomplete: {len(outcome.unanswered)} of {outcome.run.planned}"
                         f" cases have no answer ({shown})", resumable=False)
    sys.exit(1 if summary.new_findings else 0)
