"""`deploykit lint`: every ConvTranspose hazard in an ONNX model."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from deploykit.cli.app import DIVERGENCE_TABLE, app, stdout
from deploykit.cli.options import backends_option, json_option
from deploykit.cli.shared import (
    check_writable_file,
    write_json,
)
from deploykit.errors import UsageError
from deploykit.outputs import check_paths


@app.command("lint")
@click.argument("model", type=click.Path(path_type=Path))
@backends_option("runtimes you deploy to [default: every deployment runtime deploykit knows]")
@click.option("--shape", "shapes", multiple=True, help="NAME=1x256x32x32 for inputs with dynamic axes")
@click.option("--db", type=click.Path(path_type=Path), default=None, help="results database: show recorded verdicts")
@json_option("write the findings here")
def lint_command(model: Path, backends: str | None, shapes: tuple[str, ...], db: Path | None, json_path: Path | None) -> None:
    """Report every ConvTranspose hazard in MODEL.onnx; exit 1 on a hazard, an unresolved node, or a
    new finding recorded in --db for a node's exact config, on a requested backend."""
    from deploykit import backends as registry
    from deploykit.lint import as_json, lint
    from deploykit.onnxio.read import load_model, parse_shape, resolve_shapes
    from deploykit.report.export import lint_summary

    check_paths(inputs={"MODEL": model, **DIVERGENCE_TABLE}, databases={"--db": db}, outputs={"--json": json_path})
    requested = registry.parse(backends) if backends is not None else registry.deployment_targets()
    if json_path:
        check_writable_file(json_path, "--json")
    loaded = load_model(model)
    overrides = dict(parse_shape(text) for text in shapes)
    try:
        concrete = resolve_shapes(loaded, overrides)
    except UsageError:
        if overrides:
            raise
        # Hazards do not depend on the batch: a dynamic batch axis is linted at batch 1.  Other
        # dynamic axes change padding and shapes, so they must be given (the error says how).
        concrete = resolve_shapes(loaded, {}, batch=1)
    if db is not None and not db.is_file():
        raise UsageError(f"results database {db} {'is a directory' if db.is_dir() else 'does not exist'}")
    reports = lint(loaded, concrete, requested, db)
    if json_path:  # before the table: a rendering failure must not lose the findings
        write_json(json_path, {"model": str(model), "backends": requested, "nodes": as_json(reports)})
    hazards = lint_summary(reports, stdout, str(model))
    sys.exit(1 if hazards else 0)
