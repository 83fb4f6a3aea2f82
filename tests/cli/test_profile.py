"""`deploykit profile` and `conformance run --latency` end to end (real ORT, real torch)."""

from __future__ import annotations

import json

import onnx
import pytest
from helpers import assert_usage_error, deploykit

from deploykit.onnxio.write import build_case
from deploykit.op.spec import ConvTransposeSpec

pytestmark = pytest.mark.slow  # every test runs deploykit profile or a run in a subprocess

FAST = ["--warmup-ms", "5", "--duration", "0.05", "--iterations", "5"]
STAT_KEYS = ("min_ms", "median_ms", "mean_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "cv", "samples",
             "throughput_per_s", "gflops", "setup_ms")


@pytest.fixture(scope="module")
def dynamic_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("profile") / "decoder.onnx"
    spec = ConvTransposeSpec((1, 16, 8, 8), 8, (4, 4), strides=2, pads=1)
    onnx.save(build_case(spec, dynamic_batch=True).model, str(path))
    return path


def test_profile_batch_sweep_prints_the_table_and_writes_json(dynamic_model, tmp_path):
    out = tmp_path / "p.json"
    proc = deploykit("profile", str(dynamic_model), "--backends", "ort-cpu,torch-cpu", "--batch", "1,4", "--json", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "median ms" in proc.stdout and "GFLOP/s" in proc.stdout
    report = json.loads(out.read_text())
    assert report["environment"]["packages"]["onnxruntime"] and report["environment"]["cpu"]
    rows = {(r["backend"], r["batch"]): r for r in report["results"]}
    assert set(rows) == {("ort-cpu", 1), ("ort-cpu", 4), ("torch-cpu", 1), ("torch-cpu", 4)}
    for row in rows.values():
        assert row["status"] == "ok", row
        for key in STAT_KEYS:
            assert row[key] is not None, key
        assert row["min_ms"] <= row["median_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["samples"] >= 5 and row["threads"] >= 1
    # GFLOP/s counts the batch: 4x the work at the same speed would be 4x the FLOPs.
    assert rows[("ort-cpu", 4)]["gflops"] / rows[("ort-cpu", 4)]["throughput_per_s"] == pytest.approx(
        rows[("ort-cpu", 1)]["gflops"] / rows[("ort-cpu", 1)]["throughput_per_s"], rel=1e-6
    )


def test_profile_a_matrix_config_by_label():
    proc = deploykit("profile", "--matrix", "smoke", "--config", "2d-dcgan-k4s2p1", "--backends", "ort-cpu", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "2d-dcgan-k4s2p1" in proc.stdout


def test_torch_says_why_it_cannot_run_a_multi_node_model(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["X"], ["R"]), helper.make_node("Relu", ["R"], ["Y"])], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    out = tmp_path / "p.json"
    proc = deploykit("profile", str(path), "--backends", "ort-cpu,torch-cpu", "--json", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    rows = {r["backend"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["ort-cpu"]["status"] == "ok"
    assert rows["torch-cpu"]["status"] == "unsupported" and "one ConvTranspose node" in rows["torch-cpu"]["reason"]


def test_conformance_latency_columns(tmp_path):
    out = tmp_path / "r.json"
    proc = deploykit("conformance", "run", "--latency", "--backends", "ort-cpu,torch-cpu", "--db", str(tmp_path / "r.db"),
                     "--json", str(out), "--warmup-ms", "2", "--duration", "0.01", "--iterations", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Speed relative to the fastest backend" in proc.stdout and "Slowest configs per backend" in proc.stdout
    records = json.loads(out.read_text())["results"]
    timed = [r for r in records if r["verdict"] == "pass" and r["expect"] == "accept"]
    assert timed and all(r["latency_median_ms"] > 0 and r["latency_p99_ms"] >= r["latency_median_ms"] for r in timed)
    assert all(r["gflops"] > 0 and r["setup_ms"] > 0 and r["latency_cv"] is not None for r in timed)
    stored = json.loads(deploykit("conformance", "report", "--db", str(tmp_path / "r.db"), "--format", "json").stdout)["results"]
    ran = [r for r in records if r["actual_shape"] is not None and r["expect"] == "accept"]
    assert sum(r["latency_median_ms"] is not None for r in stored) == len(ran) >= len(timed)


@pytest.mark.parametrize(
    "args, needles",
    [
        (["profile", "missing.onnx"], ["missing.onnx does not exist"]),
        (["profile", "{model}", "--json", "."], ["--json . is a directory"]),
        (["profile", "{model}", "--shape", "nosuch=1x16x8x8"], ["--shape names 'nosuch'", "X"]),
        (["profile", "{model}", "--shape", "X=1x3x8x8"], ["axis 1 is fixed at 16", "got 3"]),
        (["profile", "{model}", "--shape", "X=1x16x8"], ["rank 3", "rank 4"]),
        (["profile", "{model}", "--shape", "X=abc"], ["NAME=DxDx...D"]),
        (["profile", "{model}", "--backends", "nosuch"], ["unknown backend 'nosuch'"]),
        (["profile", "{model}", "--batch", "0"], ["--batch"]),
        (["profile", "{text}"], ["not a readable ONNX model"]),
        (["profile", "{truncated}"], ["not a readable ONNX model"]),
        (["profile", "--matrix", "smoke", "--config", "nosuch"], ["no config in matrix smoke match 'nosuch'"]),
        (["profile"], ["give either MODEL.onnx or --matrix"]),
        (["profile", "{static}", "--batch", "1,4"], ["no input of the model has a dynamic batch axis"]),
        (["profile", "{static}", "--warmup-ms", "nan"], ["--warmup-ms (nan) and --duration (1) must be finite"]),
        (["profile", "{static}", "--duration", "inf"], ["--warmup-ms (200) and --duration (inf) must be finite"]),
        (["profile", "{tmp}"], ["is a directory"]),
    ],
)
def test_profile_bad_input_is_one_line_exit_2(dynamic_model, tmp_path, args, needles):
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(dynamic_model.read_bytes()[:300])
    static = tmp_path / "static.onnx"
    onnx.save(build_case(ConvTransposeSpec((1, 2, 4, 4), 2, (2, 2))).model, str(static))
    args = [a.format(model=dynamic_model, text=text, truncated=truncated, static=static, tmp=tmp_path) for a in args]
    assert_usage_error(deploykit(*args, cwd=tmp_path), *needles)


def test_a_backend_that_rejects_the_model_fails_the_profile(tmp_path):
    # output_padding 1 >= stride 1 (below dilation 2) is valid; ONNX Runtime refuses it, torch runs it.
    spec = ConvTransposeSpec((1, 4, 5, 5), 4, (3, 3), strides=1, dilations=2, output_padding=1)
    path = tmp_path / "op.onnx"
    onnx.save(build_case(spec).model, str(path))
    out = tmp_path / "p.json"
    proc = deploykit("profile", str(path), "--backends", "ort-cpu,torch-cpu", "--json", str(out), *FAST)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {r["backend"]: r["status"] for r in json.loads(out.read_text())["results"]}
    assert rows == {"ort-cpu": "rejected", "torch-cpu": "ok"}
    assert "1 row(s) where the backend rejected or crashed on the model: ort-cpu (batch 1): rejected" in proc.stdout


def test_a_backend_named_for_profiling_must_be_available(dynamic_model):
    from deploykit import backends as registry

    missing = next((n for n in ("tensorrt", "torch-cuda", "ort-cuda") if not registry.get(n).probe().available), None)
    if missing is None:
        pytest.skip("every GPU backend is available on this machine")
    proc = deploykit("profile", str(dynamic_model), "--batch", "1", "--backends", f"ort-cpu,{missing}", *FAST)
    assert_usage_error(proc, f"--backends: {missing} is not available on this machine")
