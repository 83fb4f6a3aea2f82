"""Export a PyTorch decoder to ONNX, verify the whole model, then every ConvTranspose layer.

Whole-model verification compares each backend against torch float64 eager on the same inputs
(and the same weights, upcast exactly).  Layer localisation maps each ConvTranspose node back to a
deploykit spec with its real input shape and runs it through the conformance engine, so a refusal
or drift is pinned on one ONNX node and, where torch records it, one module path.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from deploykit import backends as registry
from deploykit.errors import UsageError, lazy_import
from deploykit.execute import Executor, one_line
from deploykit.onnxread import conv_transpose_nodes, graph_inputs, module_path

#: Whole-model pass: max|y - ref| <= rtol * max|ref| + atol per output.  Through nonlinear layers
#: there is no rigorous elementwise bound, so these are dtype-aware defaults (--rtol/--atol override).
MODEL_TOLERANCE = {"float32": (1e-4, 1e-6), "float16": (1e-2, 1e-4)}
#: Backends that verify by default: the deployment targets available on CPU.
DEFAULT_VERIFY = ("ort-cpu", "torch-cpu")
ONNX_FILE_BACKENDS = ("ort-cpu", "ort-cuda", "onnx-reference")


@dataclass
class ExportOptions:
    output: Path
    opset: int = 18
    exporter: str | None = None  # None: torch's current default
    dtype: str = "float32"
    dynamic_axes: dict[int, str] = field(default_factory=dict)
    verify_backends: list[str] = field(default_factory=lambda: list(DEFAULT_VERIFY))
    rtol: float | None = None
    atol: float | None = None


@dataclass
class OutputCheck:
    backend: str
    output: str
    verdict: str
    reason: str = ""
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    rel_l2_err: float | None = None
    shape: list[int] | None = None


@dataclass
class LayerCheck:
    node: str
    module_path: str | None
    label: str | None
    config_id: str | None
    problem: str | None
    results: list[dict] = field(default_factory=list)

    def failures(self) -> list[dict]:
        return [r for r in self.results if r["verdict"] not in ("pass", "unsupported", "unavailable")]


@dataclass
class ExportReport:
    target: str
    onnx_path: str
    exporter: str
    opset: int
    dtype: str
    checker: str = "ok"
    outputs: list[OutputCheck] = field(default_factory=list)
    layers: list[LayerCheck] = field(default_factory=list)
    exit_code: int = 0
    engine: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _exporter_name(torch, exporter: str | None) -> str:
    """Which exporter ran: the one asked for, else torch's default (dynamo since torch 2.9)."""
    if exporter:
        return exporter
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return "dynamo" if (major, minor) >= (2, 9) else "torchscript"


def export_model(module, inputs: tuple, options: ExportOptions) -> onnx.ModelProto:
    """torch.onnx.export with deploykit's choices; torch's progress chatter is captured."""
    torch = lazy_import("torch", "torch", "torch")
    names = [f"input_{i}" for i in range(len(inputs))] if len(inputs) > 1 else ["input"]
    kwargs: dict[str, Any] = dict(input_names=names, output_names=["output"], opset_version=options.opset)
    if "external_data" in inspect.signature(torch.onnx.export).parameters:
        kwargs["external_data"] = False  # one self-contained file (decoders here are far below 2 GB)
    if options.exporter is not None:
        kwargs["dynamo"] = options.exporter == "dynamo"
    if options.dynamic_axes:
        kwargs["dynamic_axes"] = {name: dict(options.dynamic_axes) for name in names}
    options.output.parent.mkdir(parents=True, exist_ok=True)
    sink = io.StringIO()
    torch_logger = logging.getLogger("torch.onnx")
    level = torch_logger.level
    torch_logger.setLevel(logging.ERROR)  # e.g. "torchvision is not installed. Skipping ..."
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, inputs, str(options.output), **kwargs)
        except Exception as error:  # noqa: BLE001 - the exporter's refusal is the user's finding
            raise UsageError(f"torch.onnx.export failed: {one_line(error)}") from None
        finally:
            torch_logger.setLevel(level)
    return onnx.load(str(options.output))


def _flatten(value) -> list:
    """Outputs in the order the exporters flatten them (tuples, lists, dict values)."""
    if isinstance(value, dict):
        return [item for part in value.values() for item in _flatten(part)]
    if isinstance(value, (tuple, list)):
        return [item for part in value for item in _flatten(part)]
    if not hasattr(value, "detach"):
        raise UsageError(f"the module returns a {type(value).__name__}; deploykit verifies tensor outputs only")
    return [value]


def _compare(backend: str, name: str, actual: np.ndarray, reference: np.ndarray, rtol: float, atol: float) -> OutputCheck:
    check = OutputCheck(backend=backend, output=name, verdict="pass", shape=list(actual.shape))
    if actual.shape != reference.shape:
        check.verdict, check.reason = "shape-mismatch", f"shape {list(actual.shape)}, torch gives {list(reference.shape)}"
        return check
    y = actual.astype(np.float64)
    if not np.isfinite(y).all():
        check.verdict, check.reason = "nonfinite", f"{int((~np.isfinite(y)).sum())} NaN/Inf outputs"
        return check
    diff = np.abs(y - reference)
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    check.max_abs_err = float(diff.max()) if diff.size else 0.0
    check.max_rel_err = float((diff / np.maximum(np.abs(reference), 1e-6 * max(scale, 1e-30))).max()) if diff.size else 0.0
    norm = float(np.linalg.norm(reference))
    check.rel_l2_err = float(np.linalg.norm(y - reference) / norm) if norm else 0.0
    limit = rtol * scale + atol
    if check.max_abs_err > limit:
        check.verdict = "drift"
        check.reason = f"max abs error {check.max_abs_err:.3g} > rtol {rtol:g} x max|ref| {scale:.3g} + atol {atol:g}"
    return check


def verify_outputs(module, inputs: tuple, model: onnx.ModelProto, options: ExportOptions) -> list[OutputCheck]:
    """Each verify backend's outputs against torch float64 eager on the same inputs."""
    torch = lazy_import("torch", "torch", "torch")
    rtol, atol = MODEL_TOLERANCE[options.dtype]
    rtol = options.rtol if options.rtol is not None else rtol
    atol = options.atol if options.atol is not None else atol
    with torch.no_grad():
        reference = [t.detach().numpy() for t in _flatten(copy.deepcopy(module).double()(*(t.double() for t in inputs)))]
    feeds = {gi.name: t.detach().numpy() for gi, t in zip(graph_inputs(model), inputs)}
    checks: list[OutputCheck] = []
    for backend in options.verify_backends:
        try:
            if backend == "torch-cpu":
                with torch.no_grad():
                    actual = [t.detach().numpy() for t in _flatten(module(*inputs))]
            elif backend in ONNX_FILE_BACKENDS:
                status = registry.get(backend).probe()
                if not status.available:
                    checks.append(OutputCheck(backend, "*", "unavailable", status.reason))
                    continue
                actual = _run_onnx(backend, model, feeds)
            else:
                checks.append(OutputCheck(backend, "*", "unsupported", f"{backend} verifies single layers only"))
                continue
        except Exception as error:  # noqa: BLE001 - a refusal is the finding
            checks.append(OutputCheck(backend, "*", "rejected", one_line(error)))
            continue
        names = [o.name for o in model.graph.output] or [f"output_{i}" for i in range(len(actual))]
        for name, got, ref in zip(names, actual, reference):
            checks.append(_compare(backend, name, np.asarray(got), ref, rtol, atol))
    return checks


class _ModelCase:
    """Just enough of a Case for ONNX-file backends: the model bytes."""

    def __init__(self, model: onnx.ModelProto, feeds: dict) -> None:
        self.model = model
        self.feeds = feeds
        self.spec = None

    @property
    def model_bytes(self) -> bytes:
        return self.model.SerializeToString()


def _run_onnx(backend: str, model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """All outputs of an ONNX-file backend on the whole model."""
    if backend == "onnx-reference":
        from onnx.reference import ReferenceEvaluator

        return [np.asarray(y) for y in ReferenceEvaluator(model).run(None, feeds)]
    runner = registry.get(backend).runner(_ModelCase(model, feeds))
    runner.activate()
    try:
        return list(runner.session.run(None, feeds, runner.run_options))
    finally:
        runner.deactivate()


def check_layers(model: onnx.ModelProto, inputs: tuple, backends: list[str]) -> list[LayerCheck]:
    """Every ConvTranspose node -> spec (real input shape) -> conformance engine on each backend."""
    shapes = {gi.name: tuple(t.shape) for gi, t in zip(graph_inputs(model), inputs)}
    layer_backends = [b for b in backends if b in registry.names()]
    executor = Executor()
    nodes = {index: node for index, node in enumerate(model.graph.node)}
    checks = []
    for found in conv_transpose_nodes(model, shapes):
        node = nodes[found.index]
        check = LayerCheck(
            node=found.name,
            module_path=module_path(node),
            label=found.spec.replace(name=None).label if found.spec else None,
            config_id=found.spec.id if found.spec else None,
            problem=found.problem,
        )
        if found.spec is not None:
            named = found.spec.replace(name=None)
            if not named.is_valid:
                check.problem = "; ".join(named.violations())
            else:
                for backend in layer_backends:
                    result = executor.run(named, backend).as_dict()
                    result.pop("spec", None)
                    check.results.append(result)
        checks.append(check)
    return checks


def run_export(target: str, module, inputs: tuple, options: ExportOptions) -> ExportReport:
    torch = lazy_import("torch", "torch", "torch")
    module = module.eval()
    if options.dtype == "float16":
        module = copy.deepcopy(module).half()
        inputs = tuple(t.half() for t in inputs)
    model = export_model(module, inputs, options)
    report = ExportReport(
        target=target, onnx_path=str(options.output), exporter=_exporter_name(torch, options.exporter),
        opset=options.opset, dtype=options.dtype,
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as error:  # noqa: BLE001
        report.checker = f"failed: {one_line(error)}"
    report.outputs = verify_outputs(module, inputs, model, options)
    report.layers = check_layers(model, inputs, options.verify_backends)
    failing = (
        report.checker != "ok"
        or any(o.verdict not in ("pass", "unsupported", "unavailable") for o in report.outputs)
        or any(layer.failures() or layer.problem for layer in report.layers)
    )
    report.exit_code = 1 if failing else 0
    return report
