"""`deploykit profile`: latency of a model or a matrix config on the backends."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from deploykit.backends.timing import TimingOptions
from deploykit.cli.app import app, stdout
from deploykit.cli.options import backends_option, json_option, max_memory_option, precision_option, sampling_options
from deploykit.cli.shared import (
    check_writable_file,
    parse_int_list,
    say,
    timing_options,
    write_json,
)
from deploykit.errors import UsageError
from deploykit.outputs import check_paths


@app.command("profile")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--matrix", default=None, help="profile a matrix config instead of a model file (with --config)")
@click.option("--config", "config", default=None, help="label or id of the matrix config")
@backends_option("comma-separated backends", default="ort-cpu")
@click.option("--shape", "shapes", multiple=True, help="NAME=1x256x32x32 for an input with dynamic axes (repeatable)")
@click.option("--batch", default=None, help="batch sizes to sweep, e.g. 1,8,32 (dynamic first axis)")
@sampling_options(TimingOptions())
@click.option("--threads", type=click.IntRange(min=1), default=None, help="intra-op threads [default: all cores]")
@precision_option(help="build precision (a backend that cannot honour it says so)")
@json_option("write statistics and environment here")
@max_memory_option("for the model or config")
def profile_command(
    model: Path | None,
    matrix: str | None,
    config: str | None,
    backends: str,
    shapes: tuple[str, ...],
    batch: str | None,
    warmup_ms: float,
    iterations: int,
    duration: float,
    include_transfers: bool,
    cuda_graph: bool,
    threads: int | None,
    precision: str,
    json_path: Path | None,
    max_memory: str | None,
) -> None:
    """Time MODEL.onnx (or one matrix config) on each backend with one method."""

    from deploykit import backends as registry
    from deploykit.backends import require_available
    from deploykit.execution.resources import parse_size
    from deploykit.onnxio.read import parse_shape
    from deploykit.profile import failing_rows, matrix_spec, profile, report, targets_for_model, targets_for_spec
    from deploykit.report import profile_table

    check_paths(inputs={"MODEL": model, "--matrix": matrix}, outputs={"--json": json_path})
    if not (math.isfinite(warmup_ms) and math.isfinite(duration)):
        raise UsageError(f"--warmup-ms ({warmup_ms:g}) and --duration ({duration:g}) must be finite numbers")
    names = registry.parse(backends)
    if click.get_current_context().get_parameter_source("backends") != ParameterSource.DEFAULT:
        require_available(names, "--backends")
    batches = parse_int_list(batch, "--batch")
    budget = parse_size(max_memory) if max_memory is not None else None
    if json_path:
        check_writable_file(json_path, "--json")
    if (model is None) == (matrix is None):
        raise UsageError("give either MODEL.onnx or --matrix M --config LABEL")
    if matrix is not None:
        if not config:
            raise UsageError("--matrix needs --config LABEL_OR_ID")
        if shapes:
            raise UsageError("--shape applies to MODEL.onnx, not to a matrix config")
        spec = matrix_spec(matrix, config)
        targets, source = targets_for_spec(spec, batches, budget), f"matrix {matrix}: {spec.label} ({spec.id})"
    else:
        assert model is not None, "one of MODEL and --matrix, checked above"
        overrides = dict(parse_shape(text) for text in shapes)
        targets, source = targets_for_model(model, overrides, batches, budget), str(model)
    options = timing_options(warmup_ms, iterations, duration, include_transfers, cuda_graph)
    rows = profile(targets, names, options, threads or os.cpu_count(), precision)
    if json_path:  # before the table: a rendering failure must not lose the measurements
        write_json(json_path, report(rows, options, source))
    profile_table(rows, stdout, source)
    failed = failing_rows(rows)
    if failed:
        say(f"{len(failed)} row(s) where the backend rejected or crashed on the model: "
             + ", ".join(f"{row.backend} (batch {row.batch}): {row.status}" for row in failed))
        sys.exit(1)
