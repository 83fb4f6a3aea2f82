"""Read any ONNX model: its inputs, concrete shapes, and every ConvTranspose node as a spec.

`deploykit profile`, `deploykit lint` and `deploykit export` all start here, so a model that is
missing, not ONNX, truncated, or given a shape that does not fit it fails in one place with one line.
"""

from __future__ import annotations

import ast
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import onnx.inliner
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from deploykit.errors import UsageError
from deploykit.onnxio.write import NUMPY_DTYPES, Case
from deploykit.op.spec import MAX_OPSET, ONNX_DEFAULT, ConvTransposeSpec, SpecError

ONNX_TO_DTYPE: dict[int, str] = {
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
    parameters: tuple[str, ...] = ()  # initializers feeding W then B (torch parameter names)
    module_path: str | None = None  # best guess from the file alone


def load_model(path: Path | str) -> onnx.ModelProto:
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"model {path} is a directory; give the path of an ONNX file")
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise UsageError(f"model {path} {what}; give the path of an ONNX file")
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
        shape: tuple[int | None, ...]  # None: a dynamic axis nobody gave a size
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
        shapes[graph_input.name] = tuple(d for d in shape if d is not None)  # none is None by now
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
    shapes: dict[str, tuple[int | None, ...]] = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
    for initializer in inferred.graph.initializer:
        shapes[initializer.name] = tuple(initializer.dims)
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


#: ORT's basic level also folds BatchNorm, Add and Mul into a preceding Conv(Transpose), which
#: would give the node a bias the file does not have.  deploykit describes the file, so
#: these stay off.
_KEEP_CONV_TRANSPOSE_AS_IS = {"ConvBNFusion", "ConvAddFusion", "ConvMulFusion"}


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """The model after ONNX Runtime's basic graph optimiser, or None where ORT cannot load it.

    Exporters often compute a ConvTranspose input's pads, or its weight (weight_norm), with small
    constant subgraphs (ConstantOfShape, Concat, Reshape, Slice ...) that ONNX shape inference does
    not evaluate, so the node would have no static shape.  The basic level folds constants and the
    Shape of static tensors and keeps node and initializer names; it adds no dependency, since
    onnxruntime is one already.  The folded copy is only read for shapes, never written out.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 4  # a refusal here is not the finding; lint reports hazards itself
    options.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory(prefix="deploykit-fold-") as folder:
        options.optimized_model_filepath = str(Path(folder) / "folded.onnx")
        try:
            ort.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"],
                disabled_optimizers=_KEEP_CONV_TRANSPOSE_AS_IS,
            )
        except Exception:  # noqa: BLE001 - the optimised file may be written before a kernel refuses
            pass
        try:
            return onnx.load(options.optimized_model_filepath)
        except Exception:  # noqa: BLE001 - nothing written: ORT could not read the model at all
            return None


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - partial information is still useful
        return model


def _counterparts(model: onnx.ModelProto, view: onnx.ModelProto) -> dict[int, onnx.NodeProto]:
    """Each ConvTranspose node of `model` -> the same node in the folded view (by name, else output)."""
    by_name: dict[str, onnx.NodeProto] = {}
    by_output: dict[str, onnx.NodeProto] = {}
    for node in view.graph.node:
        if node.op_type == "ConvTranspose":
            by_name.setdefault(node.name, node)
            if node.output:
                by_output.setdefault(node.output[0], node)
    found = {}
    for index, node in enumerate(model.graph.node):
        if node.op_type == "ConvTranspose":
            twin = (by_name.get(node.name) if node.name else None) or (by_output.get(node.output[0]) if node.output else None)
            found[index] = twin if twin is not None and len(twin.input) >= 2 else node
    return found


@dataclass(frozen=True)
class _ViewContext:
    """What the file and its folded view say about every value: shapes, element types, constness.

    Shapes come from the file's own shape inference, then from the folded view (where the pads of
    a Pad were computed at run time, say), each under the file's name first, then the folded
    twin's.  Element types and constness come from the file alone: ORT's CPU session inserts
    float32 Casts around float16 ops it has no kernel for, so the view's types are ORT's, not the
    file's.
    """

    shape_sources: tuple[dict, ...]
    elem_types: dict
    input_dependent: set
    graph_inputs: set
    opset: int

    def shape(self, *names: str) -> tuple[int, ...] | None:
        for shapes in self.shape_sources:
            for name in names:
                shape = shapes.get(name)
                if shape and all(d is not None for d in shape):
                    return tuple(shape)
        return None

    def dtype(self, name: str) -> str | None:
        return ONNX_TO_DTYPE.get(self.elem_types.get(name, 0))

    def constant(self, name: str) -> bool:
        return name not in self.input_dependent


def _input_dependent(model: onnx.ModelProto) -> set[str]:
    """Values computed from a graph input; the rest (initializers, weight_norm of them) are constant."""
    dependent = {gi.name for gi in graph_inputs(model)}
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if any(name in dependent for name in node.input):
            dependent.update(node.output)
    return dependent


def _context(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None) -> tuple[_ViewContext, onnx.ModelProto]:
    """The lookups for every value, and the folded view (ORT's basic optimiser, shapes inferred)."""
    shaped = with_shapes(model, shapes) if shapes else model
    inferred = _inferred(shaped)
    folded = fold_constants(shaped)
    view = _inferred(folded) if folded is not None else inferred
    context = _ViewContext(
        shape_sources=(_value_shapes(inferred), _value_shapes(view)),
        elem_types=_elem_types(inferred),
        input_dependent=_input_dependent(model),
        graph_inputs={gi.name for gi in graph_inputs(model)},
        opset=default_opset(model),
    )
    return context, view


def inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its model-local functions expanded where they are called.

    Exporters may wrap a module in a function; inlined, its ConvTranspose nodes are ordinary graph
    nodes that shape inference and constant folding reach.  Where the inliner fails, the model is
    returned as it is and the nodes inside its functions are listed as unresolved.
    """
    if not model.functions:
        return model
    try:
        return onnx.inliner.inline_local_functions(model)
    except Exception:  # noqa: BLE001 - a malformed function: its nodes are reported unresolved
        return model


def _nested_conv_transposes(container: onnx.GraphProto | onnx.FunctionProto, path: str) -> Iterator[tuple[str, str, onnx.NodeProto, int]]:
    """(subgraph path, owning op, node, position) of every ConvTranspose inside the control-flow
    subgraphs (If, Loop, Scan) under `container` (a graph or a function), at any depth."""
    for index, node in enumerate(container.node):
        owner = path + (node.name or f"{node.op_type}#{index}")
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                bodies = [(attribute.name, attribute.g)]
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                bodies = [(f"{attribute.name}[{k}]", g) for k, g in enumerate(attribute.graphs)]
            else:
                continue
            for name, body in bodies:
                where = f"{owner}/{name}"
                for position, inner in enumerate(body.node):
                    if inner.op_type == "ConvTranspose" and inner.domain in ("", "ai.onnx"):
                        yield where, node.op_type, inner, position
                yield from _nested_conv_transposes(body, where + "/")


def _unreached(model: onnx.ModelProto) -> Iterator[tuple[str, str, onnx.NodeProto, int]]:
    """(place, why, node, position) of every ConvTranspose outside the main graph's own nodes."""
    for where, op, node, position in _nested_conv_transposes(model.graph, ""):
        yield where, f"inside the {where} subgraph of {op} node: deploykit resolves only nodes of the main graph", node, position
    for function in model.functions:  # left only where the inliner failed
        where = f"{function.domain}:{function.name}"
        for position, node in enumerate(function.node):
            if node.op_type == "ConvTranspose" and node.domain in ("", "ai.onnx"):
                yield where, f"inside model-local function {where}, which could not be inlined", node, position
        for inner, op, node, position in _nested_conv_transposes(function, where + "/"):
            yield inner, f"inside the {inner} subgraph of {op} node of function {where}", node, position


def _unreached_nodes(model: onnx.ModelProto, producers: dict, initializers: set[str]) -> list[ConvTransposeNode]:
    """ConvTranspose nodes deploykit cannot resolve, named by their place: inside control-flow
    subgraphs (If, Loop, Scan) their inputs exist only while the runtime runs the branch or loop.
    Listed as unresolved, so lint and export fail instead of passing the model silently."""
    found: list[ConvTransposeNode] = []
    for where, why, node, position in _unreached(model):
        parameters = parameter_sources(node, producers, initializers)
        found.append(ConvTransposeNode(
            index=len(model.graph.node) + len(found), name=f"{where}/{node.name or f'ConvTranspose#{position}'}",
            spec=None, problem=f"{why}, so its hazards are unknown", parameters=parameters,
            module_path=module_path_from_parameters(parameters) or module_path_from_metadata(node),
        ))
    return found


def conv_transpose_nodes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None) -> list[ConvTransposeNode]:
    """Every ConvTranspose node as a spec, with its real input shape from shape inference.

    Model-local functions are inlined first.  Shapes and constness are read from the
    constant-folded view; attributes and names (node, parameters, module path) from the model as
    given, so every row describes the user's file.  Nodes inside control-flow subgraphs come last,
    unresolved.
    """
    model = inline_functions(model)
    context, view = _context(model, shapes)
    twins = _counterparts(model, view)
    producers = {output: node for node in model.graph.node for output in node.output}
    initializers = {t.name for t in model.graph.initializer}
    found = []
    for index, node in enumerate(model.graph.node):
        if node.op_type != "ConvTranspose" or node.domain not in ("", "ai.onnx"):
            continue
        name = node.name or f"ConvTranspose#{index}"
        parameters = parameter_sources(node, producers, initializers)
        spec, problem = _node_spec(node, twins[index], name, context)
        found.append(ConvTransposeNode(
            index=index, name=name, spec=spec, problem=problem, parameters=parameters,
            module_path=module_path_from_parameters(parameters) or module_path_from_metadata(node),
        ))
    return found + _unreached_nodes(model, producers, initializers)


def _shape_problem(node: onnx.NodeProto, twin: onnx.NodeProto, context: _ViewContext) -> str | None:
    x = node.input[0]
    if context.shape(x, twin.input[0]) is None:
        if x in context.graph_inputs:
            return f"input {x!r} has no static shape (give --shape / --input-shape)"
        return (
            f"input {x!r} has no static shape: it depends on values computed at run time "
            "that constant folding and shape inference could not resolve"
        )
    if context.shape(node.input[1], twin.input[1]) is None:
        return f"weight {node.input[1]!r} has no static shape"
    if context.dtype(x) is None:
        return f"input {x!r} has an element type deploykit does not model"
    return None


def _node_spec(node: onnx.NodeProto, twin: onnx.NodeProto, name: str, context: _ViewContext) -> tuple[ConvTransposeSpec | None, str | None]:
    """(spec, None), or (None, why not): the file's attributes with the view's shapes."""
    if len(node.input) < 2 or not node.input[0] or not node.input[1]:
        return None, "ConvTranspose needs inputs X and W; this node lacks one"
    problem = _shape_problem(node, twin, context)
    if problem is not None:
        return None, problem
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
    x_shape = context.shape(node.input[0], twin.input[0])
    w_shape = context.shape(node.input[1], twin.input[1])
    dtype = context.dtype(node.input[0])
    assert x_shape is not None and w_shape is not None and dtype is not None, "_shape_problem found them"
    group = int(attrs.get("group", 1))
    try:
        return ConvTransposeSpec(
            input_shape=x_shape,
            out_channels=int(w_shape[1]) * group,
            kernel_shape=tuple(attrs.get("kernel_shape", w_shape[2:])),
            strides=attrs.get("strides", ONNX_DEFAULT),
            pads=attrs.get("pads", ONNX_DEFAULT),
            output_padding=attrs.get("output_padding", ONNX_DEFAULT),
            dilations=attrs.get("dilations", ONNX_DEFAULT),
            group=group,
            auto_pad=attrs.get("auto_pad", "NOTSET"),
            output_shape=_spatial_output_shape(attrs.get("output_shape"), len(x_shape) - 2),
            bias=len(node.input) > 2 and bool(node.input[2]),
            dtype=dtype,
            opset=min(max(context.opset, 11), MAX_OPSET),
            weights_as_inputs=not context.constant(node.input[1]),
            name=name,
        ), None
    except SpecError as error:
        return None, str(error)


def parameter_sources(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto], initializers: set[str], limit: int = 16) -> tuple[str, ...]:
    """Initializers that feed W, then B, directly or through a few ops (weight_norm's Div/Mul).

    These are the torch parameter names the exporters keep, so they name the module that owns
    the layer even where the node's own name or metadata points elsewhere (a fused BatchNorm).
    """
    found: list[str] = []
    for start in node.input[1:3]:
        queue, seen = [start], set[str]()
        while queue and len(seen) < limit:
            name = queue.pop(0)
            if not name or name in seen:
                continue
            seen.add(name)
            if name in initializers:
                if name not in found:
                    found.append(name)
            elif name in producers:
                queue.extend(producers[name].input)
    return tuple(found)


_PARAMETER_PATH = re.compile(r"^\w+(\.\w+)+$")


def module_path_from_parameters(parameters: tuple[str, ...]) -> str | None:
    """`model.1.weight` -> `model.1`: the first parameter name that reads as a torch module path.

    Without the torch module this is a guess (the name minus its last segment); exporters name
    folded or generated tensors `onnx::...`, `mul`, `_val_3`, which never read as a path.
    """
    for name in parameters:
        if _PARAMETER_PATH.match(name):
            owner = name.split(".parametrizations.", 1)[0] if ".parametrizations." in name else name.rsplit(".", 1)[0]
            return owner
    return None


def module_path_from_metadata(node: onnx.NodeProto) -> str | None:
    """The module a node came from per the exporter: dynamo's name_scopes, or TorchScript's name.

    dynamo's name_scopes are cumulative (`['', 'up', 'up.0', 'convolution']`): the last module
    scope is the path.  TorchScript names nest relative segments (`/model/model.1/conv/Op`,
    where `model.1` is child `1` of `model`).
    """
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in ast.literal_eval(prop.value) if s]
            except (ValueError, SyntaxError):
                continue
            return re.sub(r"@\d+$", "", scopes[-2]) if len(scopes) >= 2 else None
    if node.name.startswith("/") and node.name.count("/") >= 2:
        return _torchscript_path([part for part in node.name.split("/")[1:-1] if part])
    return None


def _torchscript_path(segments: list[str]) -> str | None:
    parts: list[str] = []
    previous = None
    for segment in segments:
        if previous is not None and segment.startswith(previous + "."):
            parts.append(segment[len(previous) + 1:])
        else:
            parts.append(segment)
        previous = segment
    return ".".join(parts) or None


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
    node = model.graph.node[0] if len(model.graph.node) == 1 else None
    if node is not None and node.op_type == "ConvTranspose" and len(nodes) == 1 and nodes[0].spec is not None:
        initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        if node.input[1] in initializers and (len(node.input) < 3 or not node.input[2] or node.input[2] in initializers):
            spec = nodes[0].spec
            w = initializers[node.input[1]]
            b = initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    input_name = model.graph.node[0].input[0] if spec is not None else next(iter(feeds), "X")
    x = feeds.get(input_name, np.zeros(0))
    case = Case(spec=spec, model=with_shapes(model, shapes), x=x, w=w, b=b, feeds=feeds, input_name=input_name)
    return case, flops
