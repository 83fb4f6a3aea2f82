"""`deploykit export`: a PyTorch decoder to ONNX, verified layer by layer (and optionally a TensorRT engine)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from deploykit.cli.app import app, stdout
from deploykit.cli.options import json_option, precision_option
from deploykit.cli.shared import (
    check_writable_file,
    print_error,
    write_json,
)
from deploykit.errors import UsageError
from deploykit.outputs import check_paths, factory_source


@app.command("export")
@click.argument("target")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="ONNX file to write [default: TARGET-name.onnx]")
@click.option("--input-shape", "input_shapes", multiple=True, help="1x128x1x1 per input (repeatable); default: the factory's example inputs")
@click.option("--opset", type=click.IntRange(11, 23), default=18, show_default=True)
@click.option("--dynamic-batch", is_flag=True, help="make axis 0 of every input dynamic ('batch')")
@click.option("--dynamic-axis", "dynamic_axes", multiple=True,
              help="AXIS=NAME: a named dynamic axis on every input that has it; INPUT:AXIS=NAME on one input (its ONNX name or position) (repeatable)")
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default=None, help="[default: torch's current default]")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--verify-backends", default=None, help="comma-separated [default: every deployment runtime available on the CPU]")
@click.option("--rtol", type=float, default=None, help="whole-model tolerance override")
@click.option("--atol", type=float, default=None, help="whole-model tolerance override")
@click.option("--engine", type=click.Path(path_type=Path), default=None, help="also build a TensorRT engine here")
@click.option("--engine-profile", default="default", show_default=True, help="with --engine: engines/profiles/NAME.yaml, or a profile YAML path")
@precision_option("--engine-precision", help="with --engine: build precision (fp32: the model's own types)")
@json_option("write the verification report here")
def export_command(
    target: str,
    output: Path | None,
    input_shapes: tuple[str, ...],
    opset: int,
    dynamic_batch: bool,
    dynamic_axes: tuple[str, ...],
    exporter: str | None,
    dtype: str,
    verify_backends: str | None,
    rtol: float | None,
    atol: float | None,
    engine: Path | None,
    engine_profile: str,
    engine_precision: str,
    json_path: Path | None,
) -> None:
    """Export TARGET (built-in example, package.module:factory or file.py:factory) to ONNX and verify it."""
    from deploykit import backends as registry
    from deploykit.backends import require_available
    from deploykit.backends.tensorrt import engines
    from deploykit.errors import lazy_import
    from deploykit.export.dynamic import batch_request, parse_request
    from deploykit.export.exporter import ExportFailed, ExportOptions, default_verify_backends, make_output_folder, run_export
    from deploykit.export.target import check_runs, resolve
    from deploykit.report.export import export_summary

    output = output or Path(f"{target.rsplit(':', 1)[-1].replace('/', '_')}.onnx")
    check_paths(inputs={"TARGET": factory_source(target), "--engine-profile": engine_profile},
                outputs={"-o": output, "--engine": engine, "--json": json_path})
    for option, value in (("--rtol", rtol), ("--atol", atol)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UsageError(f"{option} {value:g} must be a finite number >= 0")
    engine_settings = engines.checked_export_profile(engine_profile, engine_precision, dtype) if engine is not None else None
    lazy_import("torch", "torch", "torch")
    backends = registry.parse(verify_backends) if verify_backends is not None else default_verify_backends()
    if verify_backends is not None:
        require_available(backends, "--verify-backends")
    axes = ([batch_request()] if dynamic_batch else []) + [parse_request(text) for text in dynamic_axes]
    make_output_folder(output)  # a bad -o is a usage error before any work, not an exporter refusal
    check_writable_file(output, "-o")
    if json_path:
        check_writable_file(json_path, "--json")
    module, inputs = resolve(target)
    if input_shapes:
        import torch

        shapes = [_shape(text) for text in input_shapes]
        if inputs is not None and len(shapes) != len(inputs):
            raise UsageError(f"--input-shape given {len(shapes)} time(s), the factory's example has {len(inputs)} input(s)")
        inputs = tuple(torch.randn(*shape) for shape in shapes)
    if inputs is None:
        raise UsageError(f"TARGET {target!r} gives no example inputs; pass --input-shape, e.g. --input-shape 1x128x1x1")
    check_runs(module, inputs, target)
    options = ExportOptions(
        output=output, opset=opset, exporter=exporter, dtype=dtype, dynamic_axes=axes,
        verify_backends=backends, rtol=rtol, atol=atol,
    )
    try:
        report = run_export(target, module, inputs, options)
    except ExportFailed as error:  # the exporter refused the model: a finding, not a usage error
        print_error(str(error))
        sys.exit(1)
    engine_refused = None
    if engine is not None and report.exit_code == 0:
        assert engine_settings is not None, "made above when --engine is given"
        try:
            engines.export_engine(output.read_bytes(), engine, engine_precision, engine_settings)
            report.engine = str(engine)
        except engines.EngineRefused as error:  # TensorRT refused the model: a finding
            engine_refused = f"--engine: TensorRT refused the model: {error}"
    if json_path:  # before the summary: a rendering failure must not lose the report
        write_json(json_path, report.as_dict())
    export_summary(report, stdout)
    if engine_refused:
        print_error(engine_refused)
    sys.exit(1 if engine_refused else report.exit_code)


def _shape(text: str) -> tuple[int, ...]:
    from deploykit.onnxio.read import parse_dims

    shape = parse_dims(text)
    if shape is None:
        raise UsageError(f"--input-shape {text!r} must look like 1x128x1x1 (positive integers)")
    return shape
