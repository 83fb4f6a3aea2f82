"""The backend contract: every engine loads through `load(case, BuildConfig)`, returns every output
by name, declares what it can take, and reaches conformance, profile and export by one path, so a
new engine is one module and nothing else changes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_usage_error, deploykit, slow_if_compiling

from deploykit import backends as registry
from deploykit.backends.base import BuildConfig
from deploykit.execution.execute import run_backend
from deploykit.onnxio.read import case_from_model
from deploykit.onnxio.write import build_case
from deploykit.op.spec import ConvTransposeSpec
from deploykit.results.divergences import Divergence, version_in

LAYER = ConvTransposeSpec((1, 4, 5, 5), 3, (3, 3), strides=2, pads=1)


@pytest.mark.parametrize("name", [pytest.param(name, marks=slow_if_compiling(name)) for name in registry.names()])
def test_every_builtin_backend_returns_every_output_by_name(name):
    backend = registry.get(name)
    availability = backend.probe()
    if not availability.available:
        pytest.skip(f"{name} unavailable: {availability.reason}")
    case = build_case(LAYER)
    runner = backend.load(case, BuildConfig())
    runner.activate()
    try:
        assert [meta.name for meta in runner.input_metadata()] == ["X"]
        outputs = runner.infer(case.feeds)
    finally:
        runner.deactivate()
    assert list(outputs) == ["Y"] and outputs["Y"].shape == LAYER.output_full_shape


def test_capabilities_decide_what_a_backend_is_offered():
    torch_cpu, ort_cpu = registry.get("torch-cpu"), registry.get("ort-cpu")
    whole_model, _ = case_from_model(_two_node_model(), {"X": (1, 4, 5, 5)})
    assert "runs ONNX models only when they are one ConvTranspose node" in torch_cpu.unsupported_reason(whole_model, BuildConfig())
    assert ort_cpu.unsupported_reason(whole_model, BuildConfig()) is None
    assert "no fp16 build precision" in ort_cpu.unsupported_reason(build_case(LAYER), BuildConfig("fp16"))
    assert set(registry.deployment_targets()) >= {"ort-cpu", "torch-cpu"}
    assert not {"reference", "onnx-reference"} & set(registry.deployment_targets())


def _two_node_model():
    import onnx
    from onnx import helper

    case = build_case(LAYER)
    graph = case.model.graph
    relu = helper.make_node("Relu", ["Y"], ["Z"])
    out = helper.make_tensor_value_info("Z", onnx.TensorProto.FLOAT, None)
    new_graph = helper.make_graph([*graph.node, relu], "two", list(graph.input), [out], list(graph.initializer))
    return helper.make_model(new_graph, opset_imports=list(case.model.opset_import), ir_version=case.model.ir_version)


def test_a_refusal_is_rejected_and_a_missing_runtime_unavailable():
    ort_cpu = registry.get("ort-cpu")
    invalid = build_case(ConvTransposeSpec((1, 4, 5, 5), 3, (3, 3), group=3, expect="reject"))
    outcome = run_backend(ort_cpu, ort_cpu.probe(), invalid, BuildConfig())
    assert outcome.status == "rejected" and outcome.reason and outcome.outputs == {}
    missing = run_backend(ort_cpu, registry.Availability(False, None, "needs onnxruntime"), build_case(LAYER), BuildConfig())
    assert (missing.status, missing.reason) == ("unavailable", "needs onnxruntime")


def test_build_config_is_a_value():
    assert BuildConfig("tf32", 2, (("b", "1"), ("a", "2"))) == BuildConfig("tf32", 2, (("a", "2"), ("b", "1")))
    assert BuildConfig().hint("level", "3") == "3"
    with pytest.raises(ValueError, match="precision 'fp8' is not one of"):
        BuildConfig("fp8")


@pytest.mark.slow
def test_a_new_engine_is_one_module(tmp_path, fault_backends):
    """`minimal` implements only `load` (tests/fault_backends.py) and is registered by environment:
    conformance, profile and export all run it with no other change."""
    run = deploykit("conformance", "run", "--matrix", "smoke", "--backends", "minimal", "--db", "r.db", "--json", "r.json",
                    cwd=tmp_path)
    assert run.returncode in (0, 1), run.stderr
    records = json.loads((tmp_path / "r.json").read_text())["results"]
    assert sum(r["verdict"] == "pass" for r in records) >= 20
    model = tmp_path / "layer.onnx"
    model.write_bytes(build_case(LAYER).model_bytes)
    profile = deploykit("profile", str(model), "--backends", "minimal", "--duration", "0.01", "--warmup-ms", "1")
    assert profile.returncode == 0 and "minimal" in profile.stdout, profile.stderr
    pytest.importorskip("torch")
    export = deploykit("export", "dcgan", "-o", str(tmp_path / "d.onnx"), "--verify-backends", "minimal,torch-cpu",
                       "--json", str(tmp_path / "e.json"))
    assert export.returncode == 0, export.stdout + export.stderr
    outputs = json.loads((tmp_path / "e.json").read_text())["outputs"]
    assert {(o["backend"], o["verdict"]) for o in outputs} == {("minimal", "pass"), ("torch-cpu", "pass")}


@pytest.mark.slow
def test_precision_is_part_of_a_results_identity(tmp_path):
    command = ["conformance", "run", "--matrix", "smoke", "--backends", "reference,ort-cpu", "--precisions", "fp32,fp16",
               "--db", "r.db", "--json", "r.json"]
    proc = deploykit(*command, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = json.loads((tmp_path / "r.json").read_text())["results"]
    keys = {(r["config_id"], r["expect"], r["backend"], r["precision"]) for r in records}
    assert len(keys) == len(records) == 31 * 2 * 2
    fp16 = [r for r in records if r["backend"] == "ort-cpu" and r["precision"] == "fp16"]
    assert {r["verdict"] for r in fp16} == {"unsupported"} and "no fp16 build precision" in fp16[0]["reason"]
    assert "ort-cpu (fp16)" in proc.stdout
    assert_usage_error(deploykit("conformance", "run", "--precisions", "fp8", "--db", "x.db", cwd=tmp_path), "unknown precision 'fp8'")


def test_known_divergences_can_be_limited_to_precisions_and_versions():
    entry = Divergence(id="x", backends=("ort-cpu",), hazard="grouped", verdicts=("drift",), reason="r",
                       precisions=("fp16",), versions=">=1.20,<1.32")
    grouped = ConvTransposeSpec((1, 4, 5, 5), 4, (3, 3), group=2)
    assert entry.matches(grouped, "ort-cpu", "drift", "fp16", "1.31.1")
    assert not entry.matches(grouped, "ort-cpu", "drift", "fp32", "1.31.1")
    assert not entry.matches(grouped, "ort-cpu", "drift", "fp16", "1.32.0")
    assert not entry.matches(grouped, "ort-cpu", "drift", "fp16", None)
    assert version_in("2.13.0+cpu", "<2.14") and version_in("2.11.0 (CUDA 13.0, NVIDIA H100)", ">=2.11")
    assert version_in(None, "")


def test_a_version_range_that_is_no_range_is_a_usage_error(tmp_path):
    table = tmp_path / "known_divergences.yaml"
    table.write_text("- {id: x, backends: [ort-cpu], hazard: grouped, verdicts: [drift], reason: r, versions: 'newest'}\n")
    (tmp_path / "matrices").mkdir()
    proc = deploykit("conformance", "run", "--db", "x.db", cwd=tmp_path, env={"DEPLOYKIT_CONFORMANCE_DIR": str(tmp_path)})
    assert_usage_error(proc, "entry 0 (x)", "versions", "'newest' is not a version range")


def test_outputs_are_numpy_arrays_of_the_models_dtype():
    backend = registry.get("ort-cpu")
    case = build_case(LAYER.replace(dtype="float16"))
    outcome = run_backend(backend, backend.probe(), case, BuildConfig())
    assert outcome.status == "ok" and outcome.outputs["Y"].dtype == np.float16
