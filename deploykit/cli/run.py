"""`deploykit conformance run`: a matrix on the backends, judged against the float64 reference."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from deploykit.backends.timing import MATRIX_TIMING
from deploykit.cli.app import DIVERGENCE_TABLE, conformance_app, stderr, stdout
from deploykit.cli.options import (
    backends_option,
    db_option,
    json_option,
    max_memory_option,
    sampling_options,
    shard_option,
    tolerance_options,
)
from deploykit.cli.shared import (
    check_writable_file,
    interruptible_run,
    parse_csv,
    parse_precisions,
    parse_shard_option,
    print_warning,
    refuse_if_nothing_tested,
    render,
    say,
    summarize_run,
    timing_options,
    write_text,
)
from deploykit.errors import UsageError
from deploykit.outputs import check_paths


@conformance_app.command("run")
@click.option("--matrix", default="smoke", show_default=True, help="smoke, default, or a path to a matrix YAML")
@backends_option("comma-separated; default: every available CPU backend fit for a default run (not tvm-cpu, tinygrad-cpu: slower)")
@click.option("--dtypes", default=None, help="re-target every config to each of these dtypes (comma-separated)")
@db_option()
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1), help="worker processes in parallel")
@click.option("--resume", is_flag=True, help="finish the last unfinished run in --db")
@click.option("--timeout", default=None, type=click.FloatRange(min=0.1),
    help="seconds per (config, backend) [default: 120; a resumed run keeps its own unless given]")
@tolerance_options
@json_option()
@click.option("--latency", is_flag=True, help="also time every passing (config, backend)")
@sampling_options(MATRIX_TIMING, when="with --latency")
@click.option("--precisions", "--precision", "precisions", default="fp32", show_default=True,
    help="build precisions, comma-separated (fp32, tf32, fp16, bf16); one result per precision")
@max_memory_option()
@shard_option("K/N: run shard K of N of the tasks (CI jobs in parallel; `conformance merge` joins them)")
def conformance_run(
    matrix: str,
    backends: str | None,
    dtypes: str | None,
    db: Path,
    jobs: int,
    resume: bool,
    timeout: float | None,
    atol: float | None,
    rtol: float | None,
    json_path: Path | None,
    latency: bool,
    warmup_ms: float,
    iterations: int,
    duration: float,
    include_transfers: bool,
    cuda_graph: bool,
    precisions: str,
    max_memory: str | None,
    shard: str | None,
) -> None:
    """Run a conformance matrix; exit 1 when a non-pass result is not a known divergence."""
    from deploykit import backends as registry
    from deploykit.conformance.run import RunRequest, run
    from deploykit.execution.resources import parse_size
    from deploykit.op.judging import Tolerance
    from deploykit.results import divergences

    check_paths(inputs={"--matrix": matrix, **DIVERGENCE_TABLE}, databases={"--db": db}, outputs={"--json": json_path})
    if not all(math.isfinite(v) for v in (timeout or 0.0, atol or 0.0, rtol or 0.0)):
        raise UsageError("--timeout, --atol and --rtol must be finite numbers")
    divergences.load()  # a missing or broken table fails here, before any work, not in every worker
    if json_path:
        check_writable_file(json_path, "--json")
    if cuda_graph and not latency:
        raise UsageError("--cuda-graph is a timing mode: give it with --latency")
    timing = timing_options(warmup_ms, iterations, duration, include_transfers, cuda_graph)
    tolerance = None if atol is None and rtol is None else Tolerance(atol or 0.0, rtol or 0.0)
    chosen = registry.parse(backends)
    if backends is not None and not resume:
        registry.require_available(chosen, "--backends")  # a named backend that cannot run is no pass
    if backends is None and not resume:
        missing = registry.default_backends()[1]
        if missing:
            print_warning(f"not installed, so not run: {', '.join(missing)} (`deploykit backends` says how to add them)")
    request = RunRequest(
        matrix=matrix,
        backends=chosen,
        dtypes=parse_csv(dtypes, "--dtypes"),
        db=db,
        jobs=jobs,
        resume=resume,
        timeout=timeout,
        tolerance=tolerance,
        latency=timing.as_dict() if latency else None,
        precisions=parse_precisions(precisions),
        max_memory=parse_size(max_memory) if max_memory is not None else None,
        explicit=_explicit_run_options(),
        shard=parse_shard_option(shard),
    )
    if latency and jobs > 1:
        print_warning(f"--latency with --jobs {jobs}: configs are timed side by side and compete for cores; use --jobs 1 for numbers to publish")
    with interruptible_run(db):
        outcome = run(request, stderr)
    for note in outcome.notes:
        print_warning(note)
    summary, known = summarize_run(outcome.run, outcome.results)
    from deploykit.report import print_summary

    if json_path:  # written before the summary is laid out: a rendering failure must not lose it
        write_text(json_path, render(summary, outcome.results, known, "json"))
    print_summary(summary, stdout)
    say(
        f"run {outcome.run.run_id}: {summary.total} results, {summary.passed} pass, {summary.known} known divergences,"
        f" {summary.new_findings} new findings; stored in {db}"
    )
    refuse_if_nothing_tested(outcome.results, "choose --backends and --dtypes that run here")
    sys.exit(1 if summary.new_findings else 0)


#: command-line options of `conformance run` -> the run parameter they set (see RESUME_FIXED)
_RUN_PARAMETER = {
    "matrix": "matrix", "backends": "backends", "dtypes": "dtypes", "atol": "tolerance", "rtol": "tolerance",
    "latency": "latency", "warmup_ms": "latency", "iterations": "latency", "duration": "latency",
    "include_transfers": "latency", "cuda_graph": "latency", "precisions": "precisions", "shard": "shard",
}


def _explicit_run_options() -> set[str]:
    """Run parameters the user typed (not defaults), so --resume can refuse contradicting ones."""
    context = click.get_current_context()
    return {
        parameter for option, parameter in _RUN_PARAMETER.items()
        if context.get_parameter_source(option) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }
