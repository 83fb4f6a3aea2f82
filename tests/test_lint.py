"""`deploykit lint` on hand-built ONNX files: recorded verdicts, unresolved nodes, module paths."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deploykit.onnxgen import build_case
from deploykit.onnxread import module_path_from_metadata, module_path_from_parameters
from deploykit.spec import ConvTransposeSpec
from test_cli import deploykit

# One ungrouped float32 layer, and recorded configs around it: the two nearest by attribute count
# are of another kind (grouped, float16); only the plain ones say anything about this layer.
LAYER = dict(input_shape=[1, 4, 5, 5], out_channels=4, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
             output_padding=[1, 1], opset=17)
MATRIX = textwrap.dedent(
    """
    name: lint-neighbours
    cases:
      - {name: grouped-near, input_shape: [1, 4, 5, 5], out_channels: 4, kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], output_padding: [1, 1], group: 2, opset: 17}
      - {name: float16-near, input_shape: [1, 4, 5, 5], out_channels: 4, kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], output_padding: [1, 1], dtype: float16, opset: 17}
      - {name: plain-k4, input_shape: [1, 4, 5, 5], out_channels: 4, kernel_shape: [4, 4], strides: [2, 2], pads: [1, 1, 1, 1], opset: 17}
      - {name: plain-k2s1, input_shape: [1, 4, 5, 5], out_channels: 4, kernel_shape: [2, 2], strides: [1, 1], opset: 17, bias: false}
    """
)


def test_lint_cites_recorded_verdicts_only_from_configs_of_the_same_kind(tmp_path):
    (tmp_path / "m.yaml").write_text(MATRIX)
    run = deploykit("conformance", "run", "--matrix", str(tmp_path / "m.yaml"), "--backends", "onnx-reference,ort-cpu",
                    "--db", str(tmp_path / "r.db"), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    onnx.save(build_case(ConvTransposeSpec(**LAYER)).model, str(tmp_path / "layer.onnx"))
    lint_json = tmp_path / "lint.json"
    proc = deploykit("lint", str(tmp_path / "layer.onnx"), "--db", str(tmp_path / "r.db"), "--json", str(lint_json))
    [node] = json.loads(lint_json.read_text())["nodes"]
    assert node["verdict_source"] == "similar"
    assert {v["label"] for v in node["verdicts"]} == {"plain-k4", "plain-k2s1"}, node["verdicts"]
    assert f"{node['node']}: recorded verdicts from a similar config of the same kind, not this one" in proc.stdout


def _reshaped_by_a_runtime_value() -> onnx.ModelProto:
    """X is reshaped by a graph input's values: no folding can know the ConvTranspose's input shape."""
    w = numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "up.weight")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["X", "S"], ["R"]),
         helper.make_node("ConvTranspose", ["R", "up.weight"], ["Y"], name="up_node", strides=[2, 2])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2, 16]),
         helper.make_tensor_value_info("S", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_node_lint_cannot_resolve_fails_lint_with_a_counted_line(tmp_path):
    onnx.save(_reshaped_by_a_runtime_value(), str(tmp_path / "m.onnx"))
    proc = deploykit("lint", str(tmp_path / "m.onnx"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    unresolved = [line for line in proc.stdout.splitlines() if line.startswith("UNRESOLVED")]
    assert len(unresolved) == 1 and "up_node (module up)" in unresolved[0] and "computed at run time" in unresolved[0]
    assert "1 ConvTranspose node(s), 0 hazard(s), 1 unresolved" in proc.stdout


def _node(name: str = "", scopes: list[str] | None = None) -> onnx.NodeProto:
    node = helper.make_node("ConvTranspose", ["X", "W"], ["Y"], name=name)
    if scopes is not None:
        prop = node.metadata_props.add()
        prop.key, prop.value = "pkg.torch.onnx.name_scopes", repr(scopes)
    return node


def test_module_paths_from_exporter_metadata_and_parameter_names():
    # dynamo's scopes are cumulative: the last module scope is the path, not their join.
    assert module_path_from_metadata(_node(scopes=["", "model", "model.1", "model.1.0", "model.1.0.conv", "convolution"])) == "model.1.0.conv"
    # TorchScript nests relative segments: `model.1` is child 1 of `model`.
    assert module_path_from_metadata(_node("/model/model.1/model.1.0/conv/ConvTranspose")) == "model.1.0.conv"
    assert module_path_from_metadata(_node("/blocks.0/conv/ConvTranspose")) == "blocks.0.conv"
    assert module_path_from_metadata(_node("/dec/model/model.0/up/ConvTranspose")) == "dec.model.0.up"
    # A bare file: the weight's initializer name minus the parameter is the best guess.
    assert module_path_from_parameters(("onnx::ConvTranspose_7", "model.1.weight")) == "model.1"
    assert module_path_from_parameters(("up.parametrizations.weight.original0",)) == "up"
    assert module_path_from_parameters(("mul", "_val_3")) is None
