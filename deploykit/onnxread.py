"""Read any ONNX model: its inputs, concrete shapes, and every ConvTranspose node as a spec.

`deploykit profile`, `deploykit lint` and `deploykit export` all start here, so a model that is
missing, not ONNX, truncated, or given a shape that does not fit it fails in one place with one line.
"""

from __future__ import annotations

import ast

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from deploykit.errors import UsageError
from deploykit.onnxgen import NUMPY_DTYPES, Case
from deploykit.spec import MAX_OPSET, ConvTransposeSpec, SpecError

ONNX_TO_DTYPE = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.DOUBLE: "float64",
}


@dataclass(frozen=True)
class GraphInput:
    name: str
    elem_type: int
    dims: tuple[int | str | None, ...]  # int: fixed, str: named dynamic axis, None: unknown


@dataclass
class ConvTransposeNode:
    """One ConvTranspose node mapped to a spec (or the reason it could not be)."""

    index: int
    name: str
    spec: ConvTransposeSpec | None
    problem: str | None = None


def load_model(path: Path | str) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model {path} does not exist")
    try:
        model = onnx.load(str(path))  # external data (weights beside the file) is read too
    except FileNotFoundError as error:
        raise UsageError(f"{path}: its external data file is missing ({error.filename or error})") from None
    except (DecodeError, RuntimeWarning, ValueError, OSError) as error:
        raise UsageError(f"{path} is not a readable ONNX model ({type(error).__name__}: {str(error) or 'truncated or not protobuf'})") from None
    except Exception as error:  # noqa: BLE001 - protobuf raises assorted types on garbage
        raise UsageError(f"{path} is not a readable ONNX model ({type(error).__name__})") from None
    if not model.graph.node and not model.graph.input:
        raise UsageError(f"{path} is not an ONNX model (no graph found; truncated or another format?)")
    return model


def graph_inputs(model: onnx.ModelProto) -> list[GraphInput]:
    """Real inputs: graph inputs that are not initializers (older exporters list both)."""
    initializers = {t.name for t in model.graph.initializer}
    found = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims: list[int | str | None] = []
        for dim in tensor.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        found.append(GraphInput(value.name, tensor.elem_type, tuple(dims)))
    return found


def parse_dims(text: str) -> tuple[int, ...] | None:
    """`1x256x32x32` -> (1, 256, 32, 32); None unless every dimension is a positive integer."""
    try:
        shape = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        return None
    return shape if shape and min(shape) >= 1 else None


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """`NAME=1x256x32x32` -> ("NAME", (1, 256, 32, 32))."""
    name, sep, dims = text.partition("=")
    shape = parse_dims(dims) if sep and name else None
    if shape is None:
        raise UsageError(f"--shape {text!r} is not NAME=DxDx...D with positive integers (e.g. X=1x256x32x32)")
    return name, shape


def resolve_shapes(
    model: onnx.ModelProto, overrides: dict[str, tuple[int, ...]] | None = None, batch: int | None = None
) -> dict[str, tuple[int, ...]]:
    """Concrete shapes for every input: --shape overrides, then --batch on a dynamic first axis."""
    overrides = dict(overrides or {})
    inputs = graph_inputs(model)
    names = [i.name for i in inputs]
    for name in overrides:
        if name not in names:
            raise UsageError(f"--shape names {name!r}, but the model's inputs are: {', '.join(names) or 'none'}")
    shapes: dict[str, tuple[int, ...]] = {}
    batch_applied = False
    for graph_input in inputs:
        if graph_input.name in overrides:
            shape = overrides[graph_input.name]
            if len(shape) != len(graph_input.dims):
                raise UsageError(
                    f"--shape {graph_input.name}={'x'.join(map(str, shape))} has rank {len(shape)}, the model's input has rank {len(graph_input.dims)}"
                )
            for axis, (given, declared) in enumerate(zip(shape, graph_input.dims)):
                if isinstance(declared, int) and declared != given:
                    raise UsageError(
                        f"--shape {graph_input.name}: axis {axis} is fixed at {declared} in the model, got {given}"
                    )
        else:
            shape = tuple(d if isinstance(d, int) else None for d in graph_input.dims)
        if batch is not None and shape:
            declared_batch = graph_input.dims[0]
            if not isinstance(declared_batch, int):
                shape = (batch, *shape[1:])
                batch_applied = True
            elif declared_batch != batch:
                raise UsageError(
                    f"--batch {batch}: input {graph_input.name!r} has a fixed batch of {declared_batch}; export with a dynamic batch axis"
                )
        if any(d is None for d in shape):
            missing = [str(a) for a, d in enumerate(shape) if d is None]
            raise UsageError(
                f"input {graph_input.name!r} has dynamic axes {', '.join(missing)}; give them with --shape {graph_input.name}=..."
            )
        shapes[graph_input.name] = tuple(int(d) for d in shape)
    if batch is not None and not batch_applied:
        raise UsageError(f"--batch {batch}: no input of the model has a dynamic batch axis")
    return shapes


def with_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """A copy whose inputs carry the concrete shapes, so shape inference reaches every node."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            del dims[:]
            for size in shapes[value.name]:
                dims.add().dim_value = size
    return fixed


def _value_shapes(inferred: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Shapes of every value of a model that shape inference has already run on."""
    shapes = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    for tensor in inferred.graph.initializer:
        shapes[tensor.name] = tuple(tensor.dims)
    return shapes


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    types = {t.name: t.data_type for t in model.graph.initializer}
    for value in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        types[value.name] = value.type.tensor_type.elem_type
    return types


def default_opset(model: onnx.ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    return 1


def conv_transpose_nodes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None) -> list[ConvTransposeNode]:
    """Every ConvTranspose node as a spec, with its real input shape from shape inference."""
    shaped = with_shapes(model, shapes) if shapes else model
    try:
        inferred = onnx.shape_inference.infer_shapes(shaped, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - partial information is still useful
        inferred = shaped
    value_shapes = _value_shapes(inferred)
    elem_types = _elem_types(inferred)
    initializers = {t.name for t in model.graph.initializer}
    opset = default_opset(model)
    found = []
    for index, node in enumerate(model.graph.node):
        if node.op_type != "ConvTranspose" or node.domain not in ("", "ai.onnx"):
            continue
        name = node.name or f"ConvTranspose#{index}"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
        if len(node.input) < 2 or not node.input[0] or not node.input[1]:
            found.append(ConvTransposeNode(index, name, None, "ConvTranspose needs inputs X and W; this node lacks one"))
            continue
        x_shape = value_shapes.get(node.input[0])
        w_shape = value_shapes.get(node.input[1])
        problem = None
        if not x_shape or any(d is None for d in x_shape):
            problem = f"input {node.input[0]!r} has no static shape (give --shape / --input-shape)"
        elif not w_shape or any(d is None for d in w_shape):
            problem = f"weight {node.input[1]!r} has no static shape"
        dtype = ONNX_TO_DTYPE.get(elem_types.get(node.input[0], 0))
        if problem is None and dtype is None:
            problem = f"input {node.input[0]!r} has an element type deploykit does not model"
        spec = None
        if problem is None:
            group = int(attrs.get("group", 1))
            try:
                spec = ConvTransposeSpec(
                    input_shape=tuple(x_shape),
                    out_channels=int(w_shape[1]) * group,
                    kernel_shape=tuple(attrs.get("kernel_shape", w_shape[2:])),
                    strides=attrs.get("strides"),
                    pads=attrs.get("pads"),
                    output_padding=attrs.get("output_padding"),
                    dilations=attrs.get("dilations"),
                    group=group,
                    auto_pad=attrs.get("auto_pad", "NOTSET"),
                    output_shape=_spatial_output_shape(attrs.get("output_shape"), len(x_shape) - 2),
                    bias=len(node.input) > 2 and bool(node.input[2]),
                    dtype=dtype,
                    opset=min(max(opset, 11), MAX_OPSET),
                    weights_as_inputs=node.input[1] not in initializers,
                    name=name,
                )
            except SpecError as error:
                problem = str(error)
        found.append(ConvTransposeNode(index=index, name=name, spec=spec, problem=problem))
    return found


def module_path(node: onnx.NodeProto) -> str | None:
    """The torch module a node came from: dynamo's name_scopes metadata, or TorchScript's name."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in ast.literal_eval(prop.value) if s]
            except (ValueError, SyntaxError):
                continue
            return ".".join(scopes[:-1]) or None
    if node.name.startswith("/") and node.name.count("/") >= 2:
        return ".".join(part for part in node.name.split("/")[1:-1] if part) or None
    return None


def _spatial_output_shape(value, rank: int):
    """Some exporters write output_shape with N and C in front; the spec means spatial only."""
    if value is None:
        return None
    value = list(value)
    return tuple(value[-rank:]) if len(value) == rank + 2 else tuple(value)


def random_feeds(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for graph_input in graph_inputs(model):
        dtype = ONNX_TO_DTYPE.get(graph_input.elem_type)
        if dtype is None:
            np_dtype = helper.tensor_dtype_to_np_dtype(graph_input.elem_type)
            feeds[graph_input.name] = rng.integers(0, 2, shapes[graph_input.name]).astype(np_dtype)
        else:
            feeds[graph_input.name] = rng.uniform(-1, 1, shapes[graph_input.name]).astype(NUMPY_DTYPES[dtype])
    return feeds


def case_from_model(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> tuple[Case, int]:
    """A runnable Case for any model, and its ConvTranspose FLOPs.

    The case carries a spec only when the model is a single ConvTranspose node with initializer
    weights: that is what spec-driven backends (torch, the reference) can run from an ONNX file.
    """
    feeds = random_feeds(model, shapes)
    nodes = conv_transpose_nodes(model, shapes)
    flops = sum(n.spec.flops for n in nodes if n.spec is not None)
    spec = None
    w = b = None
    if len(model.graph.node) == 1 and len(nodes) == 1 and nodes[0].spec is not None:
        node = model.graph.node[0]
        initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        if node.input[1] in initializers and (len(node.input) < 3 or not node.input[2] or node.input[2] in initializers):
            spec = nodes[0].spec
            w = initializers[node.input[1]]
            b = initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    input_name = model.graph.node[0].input[0] if spec is not None else next(iter(feeds), "X")
    x = feeds.get(input_name, np.zeros(0))
    case = Case(spec=spec, model=with_shapes(model, shapes), x=x, w=w, b=b, feeds=feeds, input_name=input_name)
    return case, flops
