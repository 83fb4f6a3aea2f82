"""The CPU engines beyond ONNX Runtime: OpenVINO, tract, TVM and tinygrad, each a real backend on the contract.

Their accumulation models are measured in tests/op/test_accumulation.py; here: the API pitfalls
deploykit works around (OpenVINO's bfloat16 labelling, tract's panics, TVM's bit-copying
bfloat16 tensors and converter chatter, tinygrad's need for clang), their conformance on the
shipped matrix, lint's hazards for them, and the standalone repro of every divergence they have.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from helpers import NEEDS_CPU_FLAG, ROOT, deploykit, skip_unless_openvino_applies, skip_without_cpu_flag

from deploykit import backends as registry
from deploykit.backends import cpu_features
from deploykit.backends.base import BuildConfig
from deploykit.execution.execute import Executor
from deploykit.onnxio.write import build_case
from deploykit.op.reference import run_spec
from deploykit.op.spec import ConvTransposeSpec
from deploykit.results.divergences import load as load_divergences

REPROS = ROOT / "conformance" / "repros"


def _available(name: str):
    backend = registry.get(name)
    availability = backend.probe()
    if not availability.available:
        pytest.skip(f"{name} unavailable: {availability.reason}")
    return backend


def test_openvino_feeds_bfloat16_by_its_bits_and_refuses_a_mismatch():
    """OpenVINO's infer() converts a bfloat16 array by value to float16 and reads it as bf16
    (conformance/repros/openvino-python-bfloat16-feeds); the runner passes the raw bits."""
    backend = _available("openvino-cpu")
    spec = ConvTransposeSpec((1, 4, 5, 5), 3, (3, 3), strides=2, dtype="bfloat16", opset=22)
    case = build_case(spec)
    runner = backend.load(case, BuildConfig())
    runner.activate()
    [y] = runner.infer(case.feeds).values()
    assert y.dtype == np.dtype(ml_dtypes.bfloat16)
    exact = run_spec(spec, case.x, case.w, case.b)
    assert np.max(np.abs(y.astype(np.float64) - exact)) < 0.05
    with pytest.raises(TypeError, match="input X is bf16, got float32"):
        runner.infer({"X": case.x.astype(np.float32)})


@pytest.mark.parametrize("precision, kind", [("fp32", "f32"), ("fp16", "f16")])
def test_openvino_build_precision_reaches_the_deconvolution(precision, kind):
    backend = _available("openvino-cpu")
    if precision != "fp32":
        skip_unless_openvino_applies(precision)
    case = build_case(ConvTransposeSpec((1, 8, 6, 6), 4, (4, 4), strides=2, pads=1))
    runner = backend.load(case, BuildConfig(precision))
    runner.activate()
    assert {kind for layer, _, kind in runner.executed_kernels() if layer == "Deconvolution"} == {kind}


@pytest.mark.slow
def test_a_tract_panic_costs_one_crash_and_this_process_survives():
    """In-process (profile, export), a backend that can abort the process runs in a child."""
    _available("tract-cpu")
    panics = ConvTransposeSpec((1, 1, 2), 1, (2,), auto_pad="SAME_UPPER", output_shape=(2,), bias=False)
    result = Executor().run(panics, "tract-cpu")
    assert result.verdict == "crash" and "Unsupported padding in deconvolution" in result.reason
    assert result.known_divergence == "tract-output-shape-with-same"
    assert Executor().run(panics.replace(output_shape=None), "tract-cpu").verdict in ("pass", "rejected")


#: build precisions each engine is checked at on the smoke matrix (TVM and tinygrad offer fp32 only)
SMOKE_PRECISIONS = {"openvino-cpu": "fp32,fp16", "tract-cpu": "fp32,fp16", "tvm-cpu": "fp32", "tinygrad-cpu": "fp32"}


@pytest.mark.slow
@pytest.mark.parametrize("backend", list(SMOKE_PRECISIONS))
def test_smoke_matrix_has_no_unexplained_result(tmp_path, backend):
    _available(backend)
    precisions = SMOKE_PRECISIONS[backend]
    proc = deploykit("conformance", "run", "--matrix", "smoke", "--dtypes", "float32,float16", "--backends", backend,
                     "--precisions", precisions, "--db", "r.db", "--json", "r.json", "--jobs", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    records = json.loads((tmp_path / "r.json").read_text())["results"]
    assert len(records) == 31 * 2 * len(precisions.split(","))
    unexplained = [r for r in records if r["verdict"] not in ("pass", "unsupported") and not r["known_divergence"]]
    assert not unexplained
    # a precision the CPU does not run (OpenVINO's f16 without FP16 arithmetic) is unsupported wherever
    # the model compiled, with the read-back as the reason (a spec-invalid model may be refused first)
    unapplied = {p for p in precisions.split(",") if backend == "openvino-cpu" and cpu_features.openvino_lacks(p)}
    for record in (r for r in records if r["precision"] in unapplied):
        refused = record["expect"] == "reject"
        assert refused or (record["verdict"] == "unsupported" and "not applied" in record["reason"]), record
    judged = [r for r in records if r["precision"] not in unapplied]
    assert sum(r["verdict"] == "pass" for r in judged) >= 0.75 * len(judged)


@pytest.mark.slow
def test_lint_names_the_new_engines_hazards(tmp_path):
    model = tmp_path / "same-output-shape.onnx"
    spec = ConvTransposeSpec((1, 2, 4, 4), 2, (3, 3), strides=2, auto_pad="SAME_UPPER", output_shape=(8, 8))
    model.write_bytes(build_case(spec).model_bytes)
    proc = deploykit("lint", str(model), "--backends", "tract-cpu,openvino-cpu", "--json", str(tmp_path / "l.json"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [node] = json.loads((tmp_path / "l.json").read_text())["nodes"]
    rules = {f["rule"] for f in node["findings"] if f["kind"] == "hazard"}
    assert {"tract-output-shape-with-same"} <= rules


@pytest.mark.slow
def test_lint_names_tvm_and_tinygrad_hazards(tmp_path):
    model = tmp_path / "output-shape-and-valid.onnx"
    spec = ConvTransposeSpec((1, 2, 5), 2, (4,), strides=2, auto_pad="SAME_UPPER", output_shape=(9,))
    model.write_bytes(build_case(spec).model_bytes)
    proc = deploykit("lint", str(model), "--backends", "tvm-cpu,tinygrad-cpu", "--json", str(tmp_path / "l.json"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [node] = json.loads((tmp_path / "l.json").read_text())["nodes"]
    assert {f["rule"] for f in node["findings"] if f["kind"] == "hazard"} >= {"tvm-output-shape-ignored"}
    valid = ConvTransposeSpec((1, 3, 4, 5), 2, (3, 2), strides=(2, 3), auto_pad="VALID")
    model.write_bytes(build_case(valid).model_bytes)
    proc = deploykit("lint", str(model), "--backends", "tinygrad-cpu", "--json", str(tmp_path / "l.json"))
    [node] = json.loads((tmp_path / "l.json").read_text())["nodes"]
    assert {f["rule"] for f in node["findings"] if f["kind"] == "hazard"} == {"tinygrad-valid-as-same-lower"}


def test_tvm_feeds_exactly_the_graph_types():
    """TVM's Tensor.copyfrom keeps a float16 array's bits in a bfloat16 tensor
    (conformance/repros/tvm-copyfrom-bfloat16-reinterprets): the runner refuses any other dtype."""
    backend = _available("tvm-cpu")
    spec = ConvTransposeSpec((1, 4, 5, 5), 3, (3, 3), strides=2, dtype="bfloat16", opset=22)
    case = build_case(spec)
    runner = backend.load(case, BuildConfig())
    runner.activate()
    [y] = runner.infer(case.feeds).values()
    assert y.dtype == np.dtype(ml_dtypes.bfloat16)
    assert np.max(np.abs(y.astype(np.float64) - run_spec(spec, case.x, case.w, case.b))) < 0.05
    with pytest.raises(TypeError, match="input X is bfloat16, got float16"):
        runner.infer({"X": case.x.astype(np.float16)})


def test_tvm_target_is_generic_unless_the_mcpu_hint_names_a_cpu():
    pytest.importorskip("tvm")
    from deploykit.backends.tvm import llvm_target

    assert "mcpu" not in str(llvm_target(BuildConfig()))
    assert '"mcpu":"sapphirerapids"' in str(llvm_target(BuildConfig(hints=(("mcpu", "sapphirerapids"),))))


QUIET_REFUSAL = """
from deploykit import backends
from deploykit.backends.base import BuildConfig
from deploykit.onnxio.write import build_case
from deploykit.op.spec import ConvTransposeSpec
spec = ConvTransposeSpec((1, 2, 6), 2, (3,), strides=2, dilations=3, output_padding=2)
runner = backends.get("tvm-cpu").load(build_case(spec), BuildConfig())
try:
    runner.activate()
except RuntimeError as error:
    import sys; sys.exit(str(error).startswith("Conv1dTranspose expects the output padding less than the strides") and 3)
"""


@pytest.mark.slow
def test_a_tvm_refusal_prints_nothing_and_raises_its_message():
    """The Relax converter prints 'Error converting operator ...' and a C++ 'BlockBuilder
    destroyed' warning: the build silences both, so a run's terminal shows one line per problem."""
    _available("tvm-cpu")
    proc = subprocess.run([sys.executable, "-c", QUIET_REFUSAL], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_tinygrad_without_clang_is_unavailable_and_names_the_fix(monkeypatch, tmp_path):
    backend = _available("tinygrad-cpu")
    monkeypatch.setenv("PATH", str(tmp_path))  # no clang on it
    availability = backend.probe()
    assert not availability.available and availability.version
    assert "clang" in availability.reason and "apt-get install clang" in availability.reason
    assert "\n" not in availability.reason


@pytest.mark.slow
def test_tinygrad_returns_bfloat16_values_as_float32_and_refuses_other_feeds():
    backend = _available("tinygrad-cpu")
    spec = ConvTransposeSpec((1, 4, 5, 5), 3, (3, 3), strides=2, dtype="bfloat16", opset=22)
    case = build_case(spec)
    runner = backend.load(case, BuildConfig())
    runner.activate()
    [y] = runner.infer(case.feeds).values()
    assert y.dtype == np.float32  # tinygrad's numpy() has no bfloat16: the values still are bfloat16
    assert np.array_equal(y.astype(ml_dtypes.bfloat16).astype(np.float32), y)
    assert Executor(known=[]).run(spec, "tinygrad-cpu").verdict == "pass"
    with pytest.raises(TypeError, match="input X is bfloat16, got float32"):
        runner.infer({"X": case.x.astype(np.float32)})


def _repros() -> list[Path]:
    return sorted(REPROS.glob("*/repro.py"))


def _ort_cuda_available() -> bool:
    """What the ort-cuda backend's probe says: onnxruntime-gpu with a GPU it can use."""
    from deploykit import backends as registry

    return registry.get("ort-cuda").probe().available


def test_every_not_yet_reported_divergence_has_a_repro():
    for entry in load_divergences():
        if entry.upstream.startswith("not yet reported"):
            assert entry.repro and (REPROS / entry.id / "repro.py").is_file(), entry.id
    assert {p.parent.name for p in _repros()} >= {e.id for e in load_divergences() if e.repro}


@pytest.mark.slow
@pytest.mark.parametrize("repro", _repros(), ids=lambda p: p.parent.name)
def test_each_repro_still_shows_its_divergence(repro):
    """A repro exits non-zero while the runtime disagrees with the spec: when an upstream release
    fixes one, this fails and the known divergence gets a version range."""
    prefix = repro.parent.name.split("-")[0]
    runtime = {"ort": "onnxruntime"}.get(prefix, prefix)  # entry ids name ONNX Runtime `ort-`
    pytest.importorskip(runtime)
    if runtime == "tinygrad" and shutil.which("clang", path="/usr/bin:/bin") is None:
        pytest.skip("tinygrad's CPU device needs clang (apt-get install clang)")
    flag = NEEDS_CPU_FLAG.get(repro.parent.name)
    if flag:
        skip_without_cpu_flag(flag, "the repro shows a oneDNN AMX bfloat16 kernel; other CPUs run other kernels")
    if repro.parent.name.startswith("ort-cuda-") and not _ort_cuda_available():
        pytest.skip("needs onnxruntime-gpu and an NVIDIA GPU (CUDAExecutionProvider is not available)")
    proc = subprocess.run([sys.executable, str(repro)], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "RUST_BACKTRACE": "0"})
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
