"""`deploykit lint` on hand-built ONNX files: recorded verdicts, unresolved nodes, module paths."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import onnx
import pytest
from helpers import deploykit
from onnx import TensorProto, helper, numpy_helper

from deploykit.onnxio.read import module_path_from_metadata, module_path_from_parameters
from deploykit.onnxio.write import build_case
from deploykit.op.spec import ConvTransposeSpec

pytestmark = pytest.mark.slow  # every test runs deploykit lint in a subprocess

# One ungrouped float32 layer, and recorded configs around it: the two nearest by attribute count
# are of another kind (grouped, float16); only the plain ones say anything about this layer.
LAYER = dict(input_shape=[1, 4, 5, 5], out_channels=4, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
             output_padding=[1, 1], opset=17)
MATRIX = textwrap.dedent(
    """
    name: lint-neighbours
    cases:
      - {name: grouped-near, input_shape: [1, 4, 5, 5], out_channels: 4, kernel_shape: [3, 3], strides: [2, 2],
         pads: [1, 1, 1, 1], output_padding: [1, 1], group: 2, opset: 17}
      - {name: float16-near, input_shape: [1, 4, 5, 5], out_channels: 4, kernel_shape: [3, 3], strides: [2, 2],
         pads: [1, 1, 1, 1], output_padding: [1, 1], dtype: float16, opset: 17}
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


# output_padding 1 >= stride 1, below dilation 2: valid, and a hazard on ONNX Runtime.
HAZARD = dict(strides=[1, 1], dilations=[2, 2], output_padding=[1, 1])


def _hidden_layer_model(where: str) -> onnx.ModelProto:
    """One hazardous ConvTranspose inside a model-local function, or inside an If branch."""
    weight = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "W")
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4, 5, 5])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    opsets = [helper.make_opsetid("", 18)]
    if where == "function":
        up = helper.make_node("ConvTranspose", ["X", "W"], ["Y"], name="up", **HAZARD)
        function = helper.make_function("local", "Up", ["X", "W"], ["Y"], [up], opsets)
        graph = helper.make_graph([helper.make_node("Up", ["X", "W"], ["Y"], domain="local", name="call")], "g", [x], [y], [weight])
        return helper.make_model(graph, opset_imports=opsets + [helper.make_opsetid("local", 1)], functions=[function], ir_version=10)
    then = helper.make_graph([helper.make_node("ConvTranspose", ["X", "W"], ["Yb"], name="up_b", **HAZARD)], "then", [],
                             [helper.make_tensor_value_info("Yb", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", ["X"], ["Ye"])], "else", [],
                              [helper.make_tensor_value_info("Ye", TensorProto.FLOAT, None)])
    branch = helper.make_node("If", ["C"], ["Y"], then_branch=then, else_branch=other, name="if")
    graph = helper.make_graph([branch], "g", [x], [y], [weight, numpy_helper.from_array(np.array(True), "C")])
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def test_a_layer_inside_a_model_local_function_is_linted_like_a_top_level_one(tmp_path):
    onnx.save(_hidden_layer_model("function"), str(tmp_path / "m.onnx"))
    proc = deploykit("lint", str(tmp_path / "m.onnx"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ort-output-padding-ge-stride" in proc.stdout and "1 ConvTranspose node(s)" in proc.stdout


def test_a_layer_inside_a_control_flow_branch_is_unresolved_and_named_by_its_path(tmp_path):
    onnx.save(_hidden_layer_model("if"), str(tmp_path / "m.onnx"))
    proc = deploykit("lint", str(tmp_path / "m.onnx"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    unresolved = [line for line in proc.stdout.splitlines() if line.startswith("UNRESOLVED")]
    assert len(unresolved) == 1 and unresolved[0].startswith("UNRESOLVED if/then_branch/up_b: inside the if/then_branch subgraph")
    assert "1 ConvTranspose node(s), 0 hazard(s), 1 unresolved" in proc.stdout
    # export's layer check reads the graph the same way, so the layer fails the export too
    from deploykit.export.layers import check_layers

    [layer] = check_layers(_hidden_layer_model("if"), (np.zeros((1, 4, 5, 5), np.float32),), ["ort-cpu"])
    assert layer.unresolved and layer.nodes == ["if/then_branch/up_b"] and "subgraph" in layer.problem


PLAIN = textwrap.dedent(
    """
    name: one-plain-layer
    cases:
      - {name: plain-k4s2p1, input_shape: [1, 4, 5, 5], out_channels: 4, kernel_shape: [4, 4], strides: [2, 2], pads: [1, 1, 1, 1], opset: 17}
    """
)


def test_a_drift_recorded_for_the_exact_config_fails_lint_on_that_backend(tmp_path):
    # A zero tolerance records the layer as a drift on ort-cpu: a new finding for this very config.
    (tmp_path / "m.yaml").write_text(PLAIN)
    run = deploykit("conformance", "run", "--matrix", str(tmp_path / "m.yaml"), "--backends", "ort-cpu", "--atol", "0",
                    "--rtol", "0", "--db", str(tmp_path / "r.db"), cwd=tmp_path)
    assert run.returncode == 1 and "drift" in run.stdout, run.stdout + run.stderr
    assert deploykit("generate", "--matrix", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "suite")).returncode == 0
    [model] = (tmp_path / "suite").glob("*/model.onnx")
    proc = deploykit("lint", str(model), "--db", str(tmp_path / "r.db"), "--backends", "ort-cpu")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    recorded = [line for line in proc.stdout.splitlines() if line.startswith("RECORDED")]
    assert len(recorded) == 1 and "ort-cpu: drift on this exact config (plain-k4s2p1)" in recorded[0], proc.stdout
    assert "0 hazard(s), 0 unresolved, 1 recorded finding(s)" in proc.stdout
    # The drift is ort-cpu's: a torch-only deployment has nothing recorded against it.
    assert deploykit("lint", str(model), "--db", str(tmp_path / "r.db"), "--backends", "torch-cpu").returncode == 0
