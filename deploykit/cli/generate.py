"""`deploykit generate`: a matrix as ONNX backend-test folders (and trtexec's inputs)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from deploykit.cli.app import app
from deploykit.cli.options import max_memory_option, precision_option
from deploykit.cli.shared import (
    check_writable_folder,
    parse_csv,
    print_warning,
    say,
)
from deploykit.errors import UsageError
from deploykit.outputs import check_paths


@app.command("generate")
@click.option("--matrix", required=True, help="smoke, default, or a path to a matrix YAML")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="folder for the ONNX backend-test layout")
@click.option("--dtypes", default=None, help="re-target every config to these dtypes (comma-separated)")
@click.option("--dynamic-batch", is_flag=True, help="declare X's first axis as the dynamic dimension N")
@max_memory_option()
@click.option("--trtexec", "for_trtexec", is_flag=True,
    help="also write trtexec's raw inputs (<input>.bin) and DIR/trtexec.sh, which runs trtexec on every case")
@precision_option(default=None, help="with --trtexec: the build precision of trtexec.sh's commands [default: fp32]")
def generate_command(matrix: str, out: Path, dtypes: str | None, dynamic_batch: bool, max_memory: str | None,
                     for_trtexec: bool, precision: str | None) -> None:
    """Write each config as model.onnx + test_data_set_0 (inputs and reference outputs)."""
    from deploykit.backends.tensorrt import trtexec
    from deploykit.conformance.matrix import load
    from deploykit.execution import resources
    from deploykit.onnxio.write import build_case, check_problem, write_backend_test_case
    from deploykit.op.reference import run_spec

    if precision is not None and not for_trtexec:
        raise UsageError("--precision sets the build precision of trtexec.sh: give it with --trtexec")
    check_paths(inputs={"--matrix": matrix}, output_folders={"--out": out})
    loaded = load(matrix, parse_csv(dtypes, "--dtypes"))
    resources.check_budget(loaded.specs, resources.parse_size(max_memory) if max_memory else resources.default_budget())
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {out}: cannot create the folder ({error.strerror})") from None
    check_writable_folder(out, "--out")
    if for_trtexec:
        trtexec.check_script_path(out)
    scripted, unchecked = [], []
    for spec in loaded.specs:
        case = build_case(spec, dynamic_batch)
        problem = None
        if spec.is_valid:
            problem = check_problem(case.model)  # ONNX's finding about itself: written down, the case kept
            unchecked += [(spec.label, problem)] if problem else []
            expected = run_spec(spec, case.x, case.require_weights(), case.b)
        else:
            expected = None
        safe_label = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.label).strip("._") or "config"
        folder = f"test_deploykit_{safe_label}_{spec.id}"
        try:
            write_backend_test_case(case, out / folder, expected, problem)
            if for_trtexec:
                trtexec.write_inputs(case, out / folder / "test_data_set_0")
                scripted.append((folder, case))
        except OSError as error:  # e.g. the disk filled up half-way
            raise UsageError(f"--out {out}: cannot write {error.filename or spec.label} ({error.strerror})") from None
    say(f"wrote {len(loaded.specs)} test case(s) from matrix {loaded.name} to {out}")
    if unchecked:
        label, problem = unchecked[0]
        print_warning(f"ONNX's own full check (strict shape inference) rejects {len(unchecked)} case(s) the spec text allows,"
              f" e.g. {label}: {problem}; they are written all the same, the checker's message in their deploykit.json"
              " as onnx_check")
    if for_trtexec:
        script = trtexec.write_script(out, scripted, precision or "fp32")
        say(f"wrote {script}: run it with `bash {script}` where trtexec is, then"
             f" `deploykit conformance judge {out} --as tensorrt --precision {precision or 'fp32'}`")
