"""`deploykit repro`: a folder whose repro.py runs with NumPy and the runtime alone."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from deploykit.execute import Executor
from deploykit.repro import script_text, write_bundle
from deploykit.spec import ConvTransposeSpec
from deploykit.store import Store

#: repro.py run with these imports made impossible: it must need none of them
BLOCKED = ("deploykit", "onnx", "ml_dtypes", "hypothesis", "rich", "click")


def _stored(tmp_path: Path, spec: ConvTransposeSpec, backend: str, verdict: str | None = None) -> Path:
    """A results database holding the real result of `backend` on `spec` (its verdict replaced if asked)."""
    result = Executor().run(spec, backend)
    if verdict is not None:
        result.verdict = verdict
    db = tmp_path / "results.db"
    store = Store(db)
    run_id = store.start_run("test", {}, {"packages": {"onnx": "x"}, "cpu": "test cpu"}, 1, None)
    store.add(run_id, result)
    store.finish_run(run_id)
    store.close()
    return db


def _run_script(folder: Path, allow: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    blocked = [name for name in BLOCKED if name not in allow]
    code = ("import runpy, sys\n"
            f"for name in {blocked!r}:\n    sys.modules[name] = None  # importing it raises ImportError\n"
            "runpy.run_path('repro.py', run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=120)


OUTPUT_SHAPE_EXTENSION = ConvTransposeSpec(input_shape=(1, 1, 1), out_channels=1, kernel_shape=(1,), output_shape=(2,), bias=False)


def test_ort_refusal_reproduces_without_deploykit_or_onnx(tmp_path):
    db = _stored(tmp_path, OUTPUT_SHAPE_EXTENSION, "ort-cpu")
    bundle = write_bundle(db, OUTPUT_SHAPE_EXTENSION.id, "ort-cpu", tmp_path / "bundle")
    assert bundle.result.verdict == "rejected"
    assert {"model.onnx", "X.npy", "W.npy", "expected.npy", "bound.npy", "repro.py", "ISSUE.md"} <= set(bundle.files)
    done = _run_script(tmp_path / "bundle")
    assert done.returncode == 1, done.stderr
    assert "refused a valid model" in done.stdout and "Explicit output_shape" in done.stdout
    issue = (tmp_path / "bundle" / "ISSUE.md").read_text()
    assert "total_padding[i] = stride[i] * (input_size[i] - 1)" in " ".join(issue.replace("> ", " ").split())  # quoted
    assert "`output_shape` | `[2]`" in issue and "onnxruntime==" in issue and "test cpu" in issue
    assert "o = i*stride - pads_begin + k*dilation" in issue  # the values, written out


def test_a_run_with_several_precisions_reproduces_its_fp32_result(tmp_path):
    """`conformance run --precisions fp32,fp16` stores one result per precision: the config id still names one."""
    db = _stored(tmp_path, OUTPUT_SHAPE_EXTENSION, "ort-cpu")
    store = Store(db)
    [result] = store.results(1)
    store.add(1, dataclasses.replace(result, precision="fp16"))
    store.close()
    bundle = write_bundle(db, OUTPUT_SHAPE_EXTENSION.id, "ort-cpu", tmp_path / "bundle")
    assert bundle.result.precision == "fp32" and bundle.result.verdict == "rejected"


def test_issue_title_without_a_recorded_version(tmp_path):
    from deploykit.repro import issue_title

    db = _stored(tmp_path, OUTPUT_SHAPE_EXTENSION, "ort-cpu")
    bundle = write_bundle(db, OUTPUT_SHAPE_EXTENSION.id, "ort-cpu", tmp_path / "bundle")
    unknown = dataclasses.replace(bundle.result, backend_version=None)
    assert issue_title(OUTPUT_SHAPE_EXTENSION, unknown, bundle.recipe).startswith("onnxruntime: ConvTranspose refuses")


def test_a_fixed_runtime_exits_0(tmp_path):
    """A drift verdict on a config ORT computes right stands for a fixed runtime: the script says so."""
    spec = ConvTransposeSpec(input_shape=(1, 2, 3, 3), out_channels=2, kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    db = _stored(tmp_path, spec, "ort-cpu", verdict="drift")
    write_bundle(db, spec.label, "ort-cpu", tmp_path / "bundle")
    done = _run_script(tmp_path / "bundle")
    assert done.returncode == 0 and "fixed" in done.stdout, done.stdout + done.stderr


def test_wrong_values_exit_1_with_the_worst_element(tmp_path):
    spec = ConvTransposeSpec(input_shape=(1, 1, 3), out_channels=1, kernel_shape=(2,), bias=False)
    db = _stored(tmp_path, spec, "ort-cpu", verdict="drift")
    write_bundle(db, spec.id, "ort-cpu", tmp_path / "bundle")
    expected = tmp_path / "bundle" / "expected.npy"
    import numpy as np

    np.save(expected, np.load(expected) + 1.0)  # as if the runtime were off by one everywhere
    done = _run_script(tmp_path / "bundle")
    assert done.returncode == 1 and "beyond the rounding-error bound" in done.stdout, done.stdout + done.stderr


def test_spec_invalid_model_run_by_onnx_reference(tmp_path):
    spec = ConvTransposeSpec(input_shape=(1, 1, 1), out_channels=1, kernel_shape=(3,), auto_pad="SAME_UPPER", pads=(1, 1),
                             bias=False, expect="reject")
    db = _stored(tmp_path, spec, "onnx-reference")
    bundle = write_bundle(db, spec.id, "onnx-reference", tmp_path / "bundle")
    assert bundle.result.verdict == "accepted-invalid" and "expected.npy" not in bundle.files
    done = _run_script(tmp_path / "bundle", allow=("onnx", "ml_dtypes"))  # onnx (which needs ml_dtypes) is this runtime
    assert done.returncode == 1 and "rules out" in done.stdout, done.stdout + done.stderr
    issue = " ".join((tmp_path / "bundle" / "ISSUE.md").read_text().replace("> ", " ").split())
    assert "This attribute cannot be used simultaneously with auto_pad" in issue


def test_a_runtime_part_missing_is_no_refusal(tmp_path):
    """A run() whose import fails (tinygrad, TVM and TensorRT import inside run()) must not pass for
    the refusal a spec-invalid model asks for."""
    spec = ConvTransposeSpec(input_shape=(1, 1, 1), out_channels=1, kernel_shape=(3,), auto_pad="SAME_UPPER", pads=(1, 1),
                             bias=False, expect="reject")
    bundle = write_bundle(_stored(tmp_path, spec, "onnx-reference"), spec.id, "onnx-reference", tmp_path / "bundle")
    recipe = dataclasses.replace(bundle.recipe, run="def run(model_path, feeds):\n    import deploykit_absent_runtime_part\n")
    (tmp_path / "bundle" / "repro.py").write_text(script_text(spec, bundle.result, recipe, ["Y"]))
    done = _run_script(tmp_path / "bundle", allow=("onnx", "ml_dtypes"))
    assert done.returncode != 0 and "as it should" not in done.stdout, done.stdout + done.stderr


def test_a_folder_reused_keeps_no_file_of_the_earlier_config(tmp_path):
    """expected.npy of a valid config must not stay beside a spec-invalid config's model."""
    valid = ConvTransposeSpec(input_shape=(1, 1, 3), out_channels=1, kernel_shape=(2,))
    invalid = ConvTransposeSpec(input_shape=(1, 1, 1), out_channels=1, kernel_shape=(3,), auto_pad="SAME_UPPER", pads=(1, 1),
                                bias=False, expect="reject")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first = write_bundle(_stored(tmp_path / "a", valid, "ort-cpu", verdict="drift"), valid.id, "ort-cpu", tmp_path / "bundle")
    assert {"B.npy", "expected.npy", "bound.npy"} <= set(first.files)
    write_bundle(_stored(tmp_path / "b", invalid, "onnx-reference"), invalid.id, "onnx-reference", tmp_path / "bundle")
    assert not any((tmp_path / "bundle" / name).exists() for name in ("B.npy", "expected.npy", "bound.npy"))


def test_torch_backends_write_a_torch_script(tmp_path):
    pytest.importorskip("torch", reason="torch is not installed (pip install 'deploykit[torch]')")
    spec = ConvTransposeSpec(input_shape=(1, 2, 3), out_channels=4, kernel_shape=(3,), strides=(2,), pads=(1, 1), group=2)
    db = _stored(tmp_path, spec, "torch-cpu", verdict="drift")
    write_bundle(db, spec.id, "torch-cpu", tmp_path / "bundle")
    script = (tmp_path / "bundle" / "repro.py").read_text()
    assert "conv_transpose1d" in script and "groups=2" in script
    done = _run_script(tmp_path / "bundle")
    assert done.returncode == 0 and "fixed" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("config, backend, message", [
    ("nonesuch", "ort-cpu", "has no result of ort-cpu"),
    ("OUTPUT", "onnx-reference", "has no result of onnx-reference"),
])
def test_cli_usage_errors(tmp_path, config, backend, message):
    db = _stored(tmp_path, OUTPUT_SHAPE_EXTENSION, "ort-cpu")
    config = OUTPUT_SHAPE_EXTENSION.id if config == "OUTPUT" else config
    done = subprocess.run([sys.executable, "-m", "deploykit", "repro", "--db", str(db), "--config", config,
                           "--backend", backend, "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_a_pass_has_nothing_to_reproduce(tmp_path):
    spec = ConvTransposeSpec(input_shape=(1, 1, 3), out_channels=1, kernel_shape=(2,))
    db = _stored(tmp_path, spec, "ort-cpu")
    done = subprocess.run([sys.executable, "-m", "deploykit", "repro", "--db", str(db), "--config", spec.id,
                           "--backend", "ort-cpu", "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "nothing to reproduce" in done.stderr
    assert not (tmp_path / "out").exists()
