"""`deploykit conformance fuzz`: Hypothesis searches configs and shrinks each failure class."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from deploykit.cli.app import DIVERGENCE_TABLE, conformance_app, stderr, stdout
from deploykit.cli.options import backends_option, db_option, json_option
from deploykit.cli.shared import (
    check_writable_file,
    interruptible_run,
    parse_csv,
    print_warning,
    refuse_if_nothing_tested,
    say,
    write_json,
)
from deploykit.errors import UsageError
from deploykit.outputs import check_paths


@conformance_app.command("fuzz")
@backends_option("comma-separated; default: every CPU backend of a default run")
@click.option("--budget", type=click.FloatRange(min=1), default=None, help="seconds for the whole search [default: 60 unless --max-examples is given]")
@click.option("--max-examples", type=click.IntRange(min=1), default=None,
    help="explore the first N configs the --seed generates, on every backend (deterministic: the same configs on any machine)")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Hypothesis's random seed")
@click.option("--dtypes", default=None, help="comma-separated [default: every dtype one of the backends has a kernel for]")
@db_option("SQLite results database (a fuzz run is a run)")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1), help="worker processes in parallel")
@click.option("--timeout", default=None, type=click.FloatRange(min=0.1), help="seconds per (config, backend) [default: 60]")
@click.option("--resume", is_flag=True, help="finish the last unfinished fuzz run in --db")
@json_option("also write the failure classes as JSON")
def conformance_fuzz(backends: str | None, budget: float | None, max_examples: int | None, seed: int, dtypes: str | None,
                     db: Path, jobs: int, timeout: float | None, resume: bool, json_path: Path | None) -> None:
    """Search configs with Hypothesis, shrink each failure class; exit 1 when a class is NEW."""
    from deploykit import backends as registry
    from deploykit.fuzz.search import FuzzRequest, fuzz
    from deploykit.report.fuzz import class_lines, classes_json
    from deploykit.results import divergences

    check_paths(inputs=DIVERGENCE_TABLE, databases={"--db": db}, outputs={"--json": json_path})
    if not all(math.isfinite(v) for v in (budget or 0.0, timeout or 0.0)):
        raise UsageError("--budget and --timeout must be finite numbers")
    divergences.load()
    if json_path:
        check_writable_file(json_path, "--json")
    chosen = registry.parse(backends)
    if not resume:
        registry.require_available(chosen, "--backends")
    if budget is None and max_examples is None and not resume:
        budget = 60.0
    context = click.get_current_context()
    explicit = {name for name in ("backends", "dtypes", "seed", "max_examples", "budget")
                if context.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    request = FuzzRequest(backends=chosen, seed=seed, max_examples=max_examples, budget=budget,
                          dtypes=parse_csv(dtypes, "--dtypes"), db=db, jobs=jobs, timeout=timeout, resume=resume,
                          explicit=explicit)
    with interruptible_run(db, "conformance fuzz"):
        outcome = fuzz(request, stderr)
    if json_path:  # before the lines: a rendering failure must not lose it
        write_json(json_path, classes_json(outcome.classes, outcome.shrunk))
    for line in class_lines(outcome.classes, outcome.shrunk):
        stdout.print(line, markup=False, highlight=False, soft_wrap=True)
    unshrunk = sum(found.key not in outcome.shrunk for found in outcome.classes)
    if "shrink" in outcome.cut_short and unshrunk:
        print_warning(f"the time budget ended before every class was shrunk: {unshrunk} show the smallest config seen")
    if "explore" in outcome.cut_short and outcome.explored:
        stdout.print(f"explored {outcome.explored} examples in the time budget (a config drawn twice counts"
                     f" twice); --seed {request.seed} --max-examples {outcome.explored} explores the same"
                     " ones on any machine")
    new = sum(found.key.known_divergence is None for found in outcome.classes)
    configs = len({(r.config_id, r.expect) for r in outcome.results})
    say(f"fuzz run {outcome.run.run_id}: {configs} configs, {len(outcome.results)} results,"
         f" {len(outcome.classes)} failure classes ({new} NEW); stored in {db}")
    refuse_if_nothing_tested(outcome.results, "choose --backends and --dtypes that run here")
    sys.exit(1 if new else 0)
