"""spec -> ONNX ModelProto and deterministic inputs, and the ONNX backend-test layout on disk.

Inputs are drawn in float64 from a generator seeded by the config id and then rounded to the
config's dtype; the reference later reads those rounded values back exactly, so the drift it
measures is the runtime's alone, never deploykit's input rounding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deploykit.op.spec import ConvTransposeSpec
from deploykit.vocabulary import NUMPY_DTYPES

ONNX_DTYPES: dict[str, int] = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "bfloat16": TensorProto.BFLOAT16,
    "float64": TensorProto.DOUBLE,
}
# onnxruntime refuses IR versions newer than it knows; the smallest IR an opset allows is safest.
MAX_IR_VERSION = 10


@dataclass
class Case:
    """Everything one config needs to run anywhere: the model, its feeds and the raw tensors.

    `spec` is None for an arbitrary model (`deploykit profile`) that is not one ConvTranspose node;
    backends that run from the spec (torch, the reference) then say they cannot run it.
    """

    spec: ConvTransposeSpec | None
    model: onnx.ModelProto
    x: np.ndarray
    w: np.ndarray | None
    b: np.ndarray | None
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    input_name: str = "X"
    #: the torch module the model was exported from (`deploykit export`): backends that run torch
    #: modules run it instead of the file
    module: Any = None

    def require_spec(self) -> ConvTransposeSpec:
        """`spec`, where only a case built from a spec can arrive (the callers checked, or built it)."""
        if self.spec is None:
            raise TypeError("this case is an ONNX model of its own, not one ConvTranspose spec")
        return self.spec

    def require_weights(self) -> np.ndarray:
        """`w`, which every case built from a spec has (`make_case`, `case_from_model`)."""
        if self.w is None:
            raise TypeError("this case is an ONNX model of its own, with no ConvTranspose weights")
        return self.w

    @property
    def model_bytes(self) -> bytes:
        return self.model.SerializeToString()

    @property
    def output_names(self) -> list[str]:
        return [output.name for output in self.model.graph.output]


def make_inputs(spec: ConvTransposeSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """X, W, B in the spec's dtype, seeded from the config id so every process draws the same.

    W is scaled by 1/sqrt(K) so outputs stay O(1) and float16 never overflows by construction.
    """
    rng = np.random.default_rng(int(spec.id, 16))
    dtype = NUMPY_DTYPES[spec.dtype]
    scale = 1.0 / np.sqrt(max(spec.products_per_output, 1))
    x = rng.uniform(-1.0, 1.0, spec.input_shape).astype(dtype)
    w = (rng.uniform(-1.0, 1.0, spec.weight_shape) * scale).astype(dtype)
    b = rng.uniform(-0.5, 0.5, (spec.out_channels,)).astype(dtype) if spec.bias else None
    return x, w, b


def _attributes(spec: ConvTransposeSpec) -> dict:
    attrs: dict = {
        "kernel_shape": list(spec.kernel_shape),
        "strides": list(spec.strides),
        "dilations": list(spec.dilations),
        "output_padding": list(spec.output_padding),
        "group": spec.group,
    }
    if spec.auto_pad != "NOTSET":
        attrs["auto_pad"] = spec.auto_pad
    if spec.output_shape is not None:
        attrs["output_shape"] = list(spec.output_shape)
    # pads go out whenever the user wrote them, even beside auto_pad (a negative case wants that).
    if (spec.auto_pad == "NOTSET" and spec.output_shape is None) or any(spec.pads):
        attrs["pads"] = list(spec.pads)
    return attrs


def make_model(
    spec: ConvTransposeSpec, w: np.ndarray, b: np.ndarray | None, dynamic_batch: bool = False
) -> onnx.ModelProto:
    """A one-node graph.  Y is declared with its rank only, so the checker's strict shape
    inference never fights the runtimes; the inferred shape is read separately.  With
    `dynamic_batch` the first axis of X is the named dimension "N"."""
    elem = ONNX_DTYPES[spec.dtype]
    x_dims: list = list(spec.input_shape)
    if dynamic_batch:
        x_dims[0] = "N"
    inputs = [helper.make_tensor_value_info("X", elem, x_dims)]
    initializers = []
    node_inputs = ["X", "W"] + (["B"] if b is not None else [])
    tensors = [("W", w)] + ([("B", b)] if b is not None else [])
    for name, value in tensors:
        if spec.weights_as_inputs:
            inputs.append(helper.make_tensor_value_info(name, elem, list(value.shape)))
        else:
            initializers.append(numpy_helper.from_array(value, name))
    output = helper.make_tensor_value_info("Y", elem, [None] * (spec.rank + 2))
    node = helper.make_node(
        "ConvTranspose", node_inputs, ["Y"], name=f"ConvTranspose_{spec.id}", **_attributes(spec)
    )
    graph = helper.make_graph([node], f"deploykit_{spec.id}", inputs, [output], initializers)
    graph.doc_string = spec.label
    opset = helper.make_opsetid("", spec.opset)
    ir_version = min(helper.find_min_ir_version_for([opset]), MAX_IR_VERSION)
    model = helper.make_model(graph, opset_imports=[opset], ir_version=max(ir_version, 8))
    model.producer_name = "deploykit"
    model.doc_string = json.dumps(spec.to_dict(), sort_keys=True)
    return model


def build_case(spec: ConvTransposeSpec, dynamic_batch: bool = False) -> Case:
    x, w, b = make_inputs(spec)
    model = make_model(spec, w, b, dynamic_batch)
    feeds = {"X": x}
    if spec.weights_as_inputs:
        feeds["W"] = w
        if b is not None:
            feeds["B"] = b
    return Case(spec=spec, model=model, x=x, w=w, b=b, feeds=feeds)


def check(model: onnx.ModelProto) -> None:
    """onnx.checker with the full check (it runs strict shape inference too)."""
    onnx.checker.check_model(model, full_check=True)


def check_problem(model: onnx.ModelProto) -> str | None:
    """What ONNX's full check says against a model, on one line; None when it passes.

    A config the spec text allows can still fail it: ONNX's strict shape inference gets some
    `output_shape` configs wrong (onnx 1.23: an output_shape smaller than the input's spatial size,
    whatever the rank and auto_pad: "Inferred shape and existing shape differ in rank: (2) vs (3)").  That is ONNX's
    finding about itself, not a reason to leave the case out: `conformance run` records a failing
    inference as no prediction."""
    try:
        check(model)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        return " ".join(str(error).split())
    return None


def inferred_output_shape(model: onnx.ModelProto) -> tuple[int | None, ...] | None:
    """What ONNX shape inference predicts for Y (None where it cannot or fails)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - a failing inference is simply "no prediction"
        return None
    for value in list(inferred.graph.output) + list(inferred.graph.value_info):
        if value.name == "Y" and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
            if any(d is not None for d in shape):
                return shape
    return None


def write_backend_test_case(case: Case, directory: Path, expected: np.ndarray | None, onnx_check: str | None = None) -> None:
    """ONNX backend-test layout: model.onnx + test_data_set_0/{input,output}_*.pb.

    `expected` is the float64 reference (rounded to the dtype here); None for a negative case,
    which gets no output file because no right answer exists.  `onnx_check` is what ONNX's full
    check said against the model (None: it passed, or it was not run, for a spec-invalid case).
    """
    spec = case.require_spec()
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(case.model, str(directory / "model.onnx"))
    data = directory / "test_data_set_0"
    data.mkdir(exist_ok=True)
    for index, (name, value) in enumerate(case.feeds.items()):
        (data / f"input_{index}.pb").write_bytes(numpy_helper.from_array(value, name).SerializeToString())
    if expected is not None:
        rounded = expected.astype(NUMPY_DTYPES[spec.dtype])
        (data / "output_0.pb").write_bytes(numpy_helper.from_array(rounded, "Y").SerializeToString())
    meta = spec.to_dict()
    meta.update(
        id=spec.id,
        label=spec.label,
        expected_shape=list(spec.output_full_shape),
        onnx_inferred_shape=inferred_output_shape(case.model),
        violations=spec.violations(),
        onnx_check=onnx_check,
    )
    (directory / "deploykit.json").write_text(json.dumps(meta, indent=2) + "\n")
