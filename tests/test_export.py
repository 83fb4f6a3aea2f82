"""`deploykit export` and `deploykit lint` with the real torch exporter and real ORT (no mocks)."""

from __future__ import annotations

import json
import textwrap

import pytest

import onnx

from deploykit.export.examples import EXAMPLES
from deploykit.onnxgen import build_case
from deploykit.spec import ConvTransposeSpec
from test_cli import assert_usage_error, deploykit

pytest.importorskip("torch")

USER_DECODER = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
            self.act = nn.ReLU()
            self.refine = nn.ConvTranspose2d(4, 3, 3, stride=1, dilation=2, output_padding=1)

        def forward(self, x):
            return self.refine(self.act(self.up(x)))

    def make():
        torch.manual_seed(0)
        return Decoder().eval(), (torch.randn(1, 8, 6, 6),)

    def module_only():
        return Decoder().eval()

    def broken():
        raise ValueError("checkpoint not found")
    """
)


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    (folder / "mydecoder.py").write_text(USER_DECODER)
    return folder


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_every_builtin_example_exports_and_verifies(example, tmp_path):
    out = tmp_path / f"{example}.onnx"
    report_path = tmp_path / "report.json"
    proc = deploykit("export", example, "-o", str(out), "--json", str(report_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.is_file() and "verified" in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["checker"] == "ok"
    assert {o["backend"] for o in report["outputs"]} == {"ort-cpu", "torch-cpu"}
    assert report["layers"], "every example has ConvTranspose layers"
    for layer in report["layers"]:
        assert {r["backend"]: r["verdict"] for r in layer["results"]} == {"ort-cpu": "pass", "torch-cpu": "pass"}, layer


def test_output_padding_below_dilation_only_is_named_by_export_and_lint(user_module, tmp_path):
    out = tmp_path / "dec.onnx"
    report_path = tmp_path / "report.json"
    proc = deploykit("export", "mydecoder:make", "-o", str(out), "--json", str(report_path), cwd=user_module,
                     env={"PYTHONPATH": f"{user_module}"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert out.is_file(), "the ONNX file is written even when verification fails"
    fail = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert fail and "module refine" in fail[0] and "on ort-cpu" in fail[0] and "ort-output-padding-ge-stride" in fail[0]
    report = json.loads(report_path.read_text())
    refine = next(layer for layer in report["layers"] if layer["module_path"] == "refine")
    verdicts = {r["backend"]: r for r in refine["results"]}
    assert verdicts["ort-cpu"]["verdict"] == "rejected" and verdicts["torch-cpu"]["verdict"] == "pass"
    assert verdicts["ort-cpu"]["known_divergence"] == "ort-output-padding-ge-stride"

    lint_json = tmp_path / "lint.json"
    lint = deploykit("lint", str(out), "--json", str(lint_json))
    assert lint.returncode == 1, lint.stdout + lint.stderr
    nodes = json.loads(lint_json.read_text())["nodes"]
    flagged = [n for n in nodes if any(f["rule"] == "ort-output-padding-ge-stride" for f in n["findings"])]
    assert [n["node"] for n in flagged] == [refine["node"]] and flagged[0]["module_path"] == "refine"
    # The hazard is ORT's: a torch-only deployment has nothing to fear from it.
    assert deploykit("lint", str(out), "--backends", "torch-cpu").returncode == 0


def test_lint_reads_recorded_verdicts_for_the_exact_config(tmp_path):
    assert deploykit("conformance", "run", "--backends", "ort-cpu", "--db", str(tmp_path / "r.db"), cwd=tmp_path).returncode == 0
    assert deploykit("generate", "--matrix", "smoke", "--out", str(tmp_path / "suite")).returncode == 0
    model = next((tmp_path / "suite").glob("*2d-same-kernel-below-stride*")) / "model.onnx"
    lint_json = tmp_path / "lint.json"
    proc = deploykit("lint", str(model), "--db", str(tmp_path / "r.db"), "--json", str(lint_json))
    assert proc.returncode == 1  # SAME with kernel extent < stride is an ORT and shape-inference hazard
    node = json.loads(lint_json.read_text())["nodes"][0]
    assert node["verdict_source"] == "exact"
    assert node["verdicts"] == [
        {"config_id": node["config_id"], "label": "2d-same-kernel-below-stride", "backend": "ort-cpu",
         "verdict": "shape-mismatch", "reason": "output shape [1, 3, 7, 7], the ONNX spec text gives [1, 3, 8, 8]",
         "known_divergence": "ort-same-negative-padding"}
    ]
    assert {f["rule"] for f in node["findings"]} >= {"ort-same-negative-padding", "shape-inference-same-negative-padding"}


@pytest.mark.parametrize(
    "args, needles",
    [
        (["export", "nosuchpkg.models:make"], ["does not import", "nosuchpkg"]),
        (["export", "mydecoder:broken"], ["raised ValueError: checkpoint not found"]),
        (["export", "mydecoder:nothing"], ["has no callable 'nothing'"]),
        (["export", "mydecoder:module_only"], ["gives no example inputs", "--input-shape"]),
        (["export", "mydecoder:make", "--input-shape", "1x3x6x6"], ["does not run on input shape(s) 1x3x6x6"]),
        (["export", "mydecoder:make", "--input-shape", "big"], ["must look like 1x128x1x1"]),
        (["export", "dcgan", "--engine", "x.plan"], ["cannot build a TensorRT engine here"]),
        (["export", "dcgan", "--verify-backends", "nosuch"], ["unknown backend 'nosuch'"]),
        (["lint", "notes.onnx"], ["not a readable ONNX model"]),
        (["lint", "truncated.onnx"], ["not a readable ONNX model"]),
        (["lint", "missing.onnx"], ["missing.onnx does not exist"]),
        (["lint", "dynamic_hw.onnx"], ["dynamic axes 2, 3", "--shape"]),
        (["lint", "dynamic_hw.onnx", "--shape", "X=1x2x4x4", "--backends", "ort-cpux"], ["unknown backend 'ort-cpux'"]),
    ],
)
def test_export_and_lint_bad_input(user_module, args, needles):
    (user_module / "notes.onnx").write_text("definitely not protobuf\n")
    (user_module / "truncated.onnx").write_bytes(b"\x08\x08\x12\x07pytorch\x1a\x05" + b"\x0a" * 3)
    model = build_case(ConvTransposeSpec((1, 2, 4, 4), 2, (2, 2))).model
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "hw"
    onnx.save(model, str(user_module / "dynamic_hw.onnx"))
    proc = deploykit(*args, cwd=user_module, env={"PYTHONPATH": str(user_module)})
    assert_usage_error(proc, *needles)
