"""`deploykit export` and `deploykit lint` with the real torch exporter and real ORT (no mocks)."""

from __future__ import annotations

import json
import textwrap

import onnx
import pytest
from helpers import assert_usage_error, deploykit

from deploykit.export.examples import EXAMPLES
from deploykit.export.exporter import default_verify_backends
from deploykit.onnxio.write import build_case
from deploykit.op.spec import ConvTransposeSpec

pytestmark = pytest.mark.slow  # real torch exports and the CLI in subprocesses

pytest.importorskip("torch")

THIRD_PARTY_LIKE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Stage(nn.Module):
        def __init__(self):
            super().__init__()
            self.ups = nn.ModuleList([nn.ConvTranspose2d(4, 4, 3, 1, 1) for _ in range(2)])

        def forward(self, x):
            for up in self.ups:
                x = up(x)
            return x

    class Nested(nn.Module):
        \"\"\"ConvTranspose + BatchNorm (exporters fuse them), a ModuleList inside a Sequential.\"\"\"

        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(
                nn.ConvTranspose2d(8, 4, 4, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                nn.Sequential(Stage()),
            )

        def forward(self, x):
            return self.model(x)

    def nested():
        torch.manual_seed(0)
        module = Nested().eval()
        module.model[1].running_mean.uniform_(-1, 1)
        module.model[1].running_var.uniform_(0.5, 2)
        return module, (torch.randn(1, 8, 3, 3),)

    class Padded(nn.Module):
        \"\"\"Reflection padding computed at run time before a weight_norm ConvTranspose1d (EnCodec, Oobleck).\"\"\"

        def __init__(self):
            super().__init__()
            self.pad = nn.ReflectionPad1d(3)
            self.up = nn.utils.weight_norm(nn.ConvTranspose1d(8, 4, 4, stride=2, padding=1))

        def forward(self, x):
            return self.up(self.pad(x))

    def padded():
        torch.manual_seed(0)
        return Padded().eval(), (torch.randn(1, 8, 10),)

    class Refused(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(2, 2, 2, 2)

        def forward(self, x):
            return torch.linalg.inv(self.up(x))

    def refused():
        return Refused().eval(), (torch.randn(1, 2, 2, 2),)

    class Tied(nn.Module):
        \"\"\"Two layers sharing one weight (a tied decoder).\"\"\"

        def __init__(self):
            super().__init__()
            self.a = nn.ConvTranspose2d(4, 4, 3, 1, 1)
            self.b = nn.ConvTranspose2d(4, 4, 3, 1, 1)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    def tied():
        torch.manual_seed(0)
        return Tied().eval(), (torch.randn(1, 4, 5, 5),)
    """
)

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
    (folder / "zoo.py").write_text(THIRD_PARTY_LIKE)
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
    # By default every deployment runtime available on the CPU verifies (what the registry declares).
    targets = default_verify_backends()
    assert {"ort-cpu", "torch-cpu"} <= set(targets)
    assert {o["backend"] for o in report["outputs"]} == set(targets)
    assert report["layers"], "every example has ConvTranspose layers"
    for layer in report["layers"]:
        assert {r["backend"]: r["verdict"] for r in layer["results"]} == dict.fromkeys(targets, "pass"), layer


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
    refine = next(layer for layer in report["layers"] if layer["module_paths"] == ["refine"])
    verdicts = {r["backend"]: r for r in refine["results"]}
    assert verdicts["ort-cpu"]["verdict"] == "rejected" and verdicts["torch-cpu"]["verdict"] == "pass"
    assert verdicts["ort-cpu"]["known_divergence"] == "ort-output-padding-ge-stride"

    lint_json = tmp_path / "lint.json"
    lint = deploykit("lint", str(out), "--json", str(lint_json))
    assert lint.returncode == 1, lint.stdout + lint.stderr
    nodes = json.loads(lint_json.read_text())["nodes"]
    flagged = [n for n in nodes if any(f["rule"] == "ort-output-padding-ge-stride" for f in n["findings"])]
    assert [n["node"] for n in flagged] == refine["nodes"] and flagged[0]["module_path"] == "refine"
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
        (["export", "mydecoder:make", "--dynamic-axis", "7=foo"], ["--dynamic-axis 7=foo", "1x8x6x6", "no axis 7"]),
        (["export", "dcgan", "--verify-backends", "nosuch"], ["unknown backend 'nosuch'"]),
        (["export", "dcgan", "--rtol", "nan"], ["--rtol nan must be a finite number >= 0"]),
        (["export", "dcgan", "--rtol", "inf"], ["--rtol inf must be a finite number >= 0"]),
        (["export", "dcgan", "--atol", "-1"], ["--atol -1 must be a finite number >= 0"]),
        (["export", "mydecoder:make", "--dynamic-axis", "\u00b2=foo"], ["must be AXIS=NAME"]),
        (["export", "dcgan", "-o", "."], ["-o . is a directory"]),
        (["export", "dcgan", "-o", "notes.onnx/dcgan.onnx"], ["cannot create the folder notes.onnx"]),
        (["lint", "."], ["model . is a directory"]),
        (["lint", "notes.onnx"], ["not a readable ONNX model"]),
        (["lint", "truncated.onnx"], ["not a readable ONNX model"]),
        (["lint", "missing.onnx"], ["missing.onnx does not exist"]),
        (["lint", "/dev/null"], ["model /dev/null is not a regular file"]),
        (["lint", "dynamic_hw.onnx", "--json", "."], ["--json . is a directory"]),
        (["export", "dcgan", "-o", "d.onnx", "--json", "."], ["--json . is a directory"]),
        (["export", "mydecoder:make", "--dynamic-axis", "0=a", "--dynamic-axis", "0=b"], ["axis 0 is already dynamic as 'a'"]),
        (["export", "mydecoder:make", "--dynamic-batch", "--dynamic-axis", "0=n"], ["axis 0 is already dynamic as 'batch'"]),
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
    assert not (user_module / "d.onnx").exists()  # refused before the export wrote anything


def _export(user_module, tmp_path, *args):
    """`deploykit export ...` in the user's folder: (process, JSON report)."""
    report_path = tmp_path / "report.json"
    proc = deploykit("export", *args, "--json", str(report_path), cwd=user_module, env={"PYTHONPATH": str(user_module)})
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    return proc, report


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_nested_layers_are_named_by_the_module_that_owns_the_weight_and_grouped_per_config(user_module, tmp_path, exporter):
    # dynamo: cumulative name_scopes and the fused BatchNorm's scope; TorchScript: repeated segments.
    # The weight's parameter name is right in both, and two identical layers make one config.
    out = tmp_path / "nested.onnx"
    extra = ["--opset", "11"] if exporter == "dynamo" else []
    proc, report = _export(user_module, tmp_path, "zoo:nested", "--exporter", exporter, "-o", str(out), *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    layers = [(layer["module_paths"], layer["count"], len(layer["results"])) for layer in report["layers"]]
    runs = len(default_verify_backends())  # one result per verify backend
    assert layers == [(["model.0"], 1, runs), (["model.3.0.ups.0", "model.3.0.ups.1"], 2, runs)], layers
    assert report["layer_counts"] == {"nodes": 3, "configs": 2, "unresolved": 0}
    assert "3 ConvTranspose node(s) in 2 distinct config(s), 0 unresolved" in proc.stdout
    lint_json = tmp_path / "lint.json"
    assert deploykit("lint", str(out), "--json", str(lint_json)).returncode == 0
    nodes = json.loads(lint_json.read_text())["nodes"]
    assert [n["module_path"] for n in nodes] == ["model.0", "model.3.0.ups.0", "model.3.0.ups.1"]
    if exporter == "dynamo":
        # The pinned exporter cannot down-convert to opset 11: the report gives the opset written.
        written = next(o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx"))
        assert written != 11 and report["opset"] == written and report["opset_requested"] == 11
        assert f"asked for opset 11, the file has opset {written}" in report["opset_warning"]
        assert f"WARNING: asked for opset 11, the file has opset {written}" in proc.stdout
        assert f"opset {written}, float32" in proc.stdout


def test_weight_norm_after_run_time_padding_exports_in_float16_and_verifies_a_second_size(user_module, tmp_path):
    # weight_norm modules cannot be deep-copied; TorchScript computes the reflection pads at run time.
    out = tmp_path / "padded.onnx"
    proc, report = _export(
        user_module, tmp_path, "zoo:padded", "--exporter", "torchscript", "--dtype", "float16",
        "--dynamic-axis", "2=time", "--verify-backends", "ort-cpu", "-o", str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    outputs = [(o["input_shapes"], o["verdict"]) for o in report["outputs"]]
    assert outputs == [([[1, 8, 10]], "pass"), ([[1, 8, 20]], "pass")], outputs
    [layer] = report["layers"]
    assert layer["config_id"] and layer["input_shape"] == [1, 8, 16] and layer["module_paths"] == ["up"]
    assert layer["label"].startswith("1d-k4s2p1-op0-d1-g1-f16") and layer["results"][0]["verdict"] == "pass"
    lint_json = tmp_path / "lint.json"
    lint = deploykit("lint", str(out), "--shape", "input=1x8x10", "--json", str(lint_json))
    assert lint.returncode == 0, lint.stdout
    [node] = json.loads(lint_json.read_text())["nodes"]
    assert node["config_id"] and node["problem"] is None and node["module_path"] == "up"


def test_an_exporter_refusal_is_a_finding_on_one_line(user_module, tmp_path):
    proc, report = _export(user_module, tmp_path, "zoo:refused", "--exporter", "torchscript", "-o", str(tmp_path / "r.onnx"))
    assert proc.returncode == 1 and report is None
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "torchscript exporter) refused the model" in lines[0] and "linalg_inv" in lines[0], lines


def test_the_export_summary_names_and_counts_unresolved_layers():
    # Rendering only: a node that constant folding cannot resolve must not pass unnoticed.
    import io

    from rich.console import Console

    from deploykit.export.exporter import ExportReport
    from deploykit.export.layers import LayerCheck
    from deploykit.report.export import export_summary

    report = ExportReport(target="t", onnx_path="t.onnx", exporter="torchscript", opset=18, dtype="float32", exit_code=1)
    report.layers = [
        LayerCheck("2d-k4s2p1-op0-d1-g1-f32-o18", "abc", None, [1, 4, 3, 3], ["a", "b", "c"], ["up.0", "up.1", "up.2"],
                   [{"backend": "ort-cpu", "verdict": "pass", "reason": ""}]),
        LayerCheck(None, None, "input 'R' has no static shape", None, ["/dec/ConvTranspose"], ["dec"]),
    ]
    sink = io.StringIO()
    export_summary(report, Console(file=sink, width=200))
    text = sink.getvalue()
    assert "UNRESOLVED node /dec/ConvTranspose, module dec: input 'R' has no static shape" in text
    assert "4 ConvTranspose node(s) in 1 distinct config(s), 1 unresolved" in text
    assert report.as_dict()["layer_counts"] == {"nodes": 4, "configs": 1, "unresolved": 1}


def test_a_backend_named_for_verification_must_be_available(tmp_path):
    # A CI job that asks for a GPU runtime must not go green on a machine without one.
    from deploykit import backends as registry

    missing = next((n for n in ("tensorrt", "torch-cuda", "ort-cuda") if not registry.get(n).probe().available), None)
    if missing is None:
        pytest.skip("every GPU backend is available on this machine")
    reason = registry.get(missing).probe().reason
    proc = deploykit("export", "dcgan", "--verify-backends", f"ort-cpu,{missing}", "-o", "dcgan.onnx", cwd=tmp_path)
    assert_usage_error(proc, f"--verify-backends: {missing} is not available", reason.split(";")[0])


def test_tied_weights_export_and_verify(user_module, tmp_path):
    proc, report = _export(user_module, tmp_path, "zoo:tied", "--exporter", "torchscript", "--verify-backends", "ort-cpu",
                           "-o", str(tmp_path / "tied.onnx"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [(o["backend"], o["verdict"]) for o in report["outputs"]] == [("ort-cpu", "pass")], report["outputs"]


def test_float64_reference_with_a_tied_buffer_and_a_shared_submodule():
    import numpy as np
    import torch
    from torch import nn

    from deploykit.export.verify import float64_outputs

    class Shared(nn.Module):
        """One layer and one BatchNorm registered twice, and a buffer tied across two BatchNorms."""

        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(4, 4, 3, 1, 1)
            self.again = self.up
            self.bn, self.bn2 = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
            self.bn2.running_mean = self.bn.running_mean

        def forward(self, x):
            return self.bn2(self.again(self.bn(self.up(x))))

    torch.manual_seed(0)
    module = Shared().eval()
    module.bn.running_mean.uniform_(-1, 1)
    x = torch.randn(1, 4, 5, 5)
    [reference] = float64_outputs(module, (x,))
    # The user's module keeps its float32 tensors (torch's functional_call does not restore a slot
    # swapped twice), so it still runs in float32 and agrees with the float64 reference.
    assert {t.dtype for t in module.state_dict().values() if t.is_floating_point()} == {torch.float32}
    with torch.no_grad():
        eager = module(x).numpy()
    assert reference.dtype == np.float64 and np.abs(reference - eager).max() < 1e-5
