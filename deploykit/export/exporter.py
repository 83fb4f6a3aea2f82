"""Export a PyTorch decoder to ONNX, verify the whole model, then every ConvTranspose layer.

Whole-model verification (`verify.py`) compares each backend against torch float64 eager on the
same inputs (and the same weights, upcast exactly).  Layer localisation (`layers.py`) maps each
ConvTranspose node back to a deploykit spec with its real input shape and to the torch module that
owns its weight, and runs each distinct config through the conformance engine, so a refusal or
drift is pinned on named nodes and modules.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from deploykit.errors import UsageError, lazy_import
from deploykit.execution.execute import one_line
from deploykit.export.dynamic import AxisRequest, describe, input_names, resolve
from deploykit.export.layers import LayerCheck, check_layers
from deploykit.export.verify import OutputCheck, second_size_inputs, verify_outputs
from deploykit.onnxio.read import default_opset

#: Whole-model pass: max|y - ref| <= rtol * max|ref| + atol per output.  Through nonlinear layers
#: there is no rigorous elementwise bound, so these are dtype-aware defaults (--rtol/--atol override).
MODEL_TOLERANCE = {"float32": (1e-4, 1e-6), "float16": (1e-2, 1e-4)}
def default_verify_backends() -> list[str]:
    """Every deployment runtime of a default run available on this machine's CPU: what export
    verifies by default (compilers that take seconds per model, such as TVM, run when named)."""
    from deploykit import backends as registry

    chosen = []
    for name in registry.deployment_targets():
        backend = registry.get(name)
        if backend.device == "cpu" and backend.capabilities.in_default_run and backend.probe().available:
            chosen.append(name)
    return chosen


@dataclass
class ExportOptions:
    output: Path
    opset: int = 18
    exporter: str | None = None  # None: torch's current default
    dtype: str = "float32"
    dynamic_axes: list[AxisRequest] = field(default_factory=list)  # as asked; resolved per input by run_export
    verify_backends: list[str] = field(default_factory=default_verify_backends)
    rtol: float | None = None
    atol: float | None = None


def make_output_folder(path: Path) -> None:
    """Create the folder of the ONNX file before exporting: the exporter's own error for a folder
    it cannot create would read as a refusal of the model (exit 1), not a bad path (exit 2)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"-o {path}: cannot create the folder {path.parent} ({error.strerror})") from None


class ExportFailed(Exception):
    """The exporter refused the model: a finding about the model (exit 1), not a usage error."""


@dataclass
class ExportReport:
    target: str
    onnx_path: str
    exporter: str
    opset: int  # the opset the written file declares
    dtype: str
    opset_requested: int | None = None
    opset_warning: str | None = None  # set when the exporter could not write the requested opset
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)  # input name -> {axis: symbol}
    checker: str = "ok"
    outputs: list[OutputCheck] = field(default_factory=list)
    layers: list[LayerCheck] = field(default_factory=list)
    exit_code: int = 0
    engine: str | None = None

    def counts(self) -> dict[str, int]:
        """ConvTranspose nodes, distinct configs, and nodes deploykit could not resolve."""
        return {
            "nodes": sum(layer.count for layer in self.layers),
            "configs": sum(1 for layer in self.layers if not layer.unresolved),
            "unresolved": sum(layer.count for layer in self.layers if layer.unresolved),
        }

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = [layer.as_dict() for layer in self.layers]
        data["layer_counts"] = self.counts()
        return data


def _exporter_name(torch, exporter: str | None) -> str:
    """Which exporter ran: the one asked for, else torch's default (dynamo since torch 2.9)."""
    if exporter:
        return exporter
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return "dynamo" if (major, minor) >= (2, 9) else "torchscript"


class _VersionNotes(logging.Handler):
    """Keeps the exporter's opset-conversion warnings, which torch otherwise only logs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.notes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "version" in message.lower():
            cause = f" ({one_line(record.exc_info[1], limit=240)})" if record.exc_info and record.exc_info[1] else ""
            self.notes.append(one_line(Exception(message + cause), limit=400))


def _export_kwargs(torch, inputs: tuple, options: ExportOptions, axes: dict[int, dict[int, str]]) -> dict[str, Any]:
    names = input_names(len(inputs))
    kwargs: dict[str, Any] = dict(input_names=names, output_names=["output"], opset_version=options.opset)
    if "external_data" in inspect.signature(torch.onnx.export).parameters:
        kwargs["external_data"] = False  # one self-contained file (decoders are far below 2 GB)
    if options.exporter is not None:
        kwargs["dynamo"] = options.exporter == "dynamo"
    if axes:
        kwargs["dynamic_axes"] = {names[index]: dict(named) for index, named in sorted(axes.items())}
    return kwargs


@contextlib.contextmanager
def _quiet_descriptors():
    """Send file descriptors 1 and 2 to a scratch file: exporters also print from C++ (TorchScript's
    'Torch IR graph at exception'), which Python's stream redirection never sees."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no descriptors to protect (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 1)
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)


@contextlib.contextmanager
def _quiet_exporter(notes: _VersionNotes):
    """Silence torch's progress chatter and warnings; keep the opset-conversion notes."""
    torch_logger = logging.getLogger("torch.onnx")
    level = torch_logger.level
    torch_logger.setLevel(logging.ERROR)  # e.g. "torchvision is not installed. Skipping ..."
    converter_logger = logging.getLogger("onnxscript")
    converter_logger.addHandler(notes)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), _quiet_descriptors():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch_logger.setLevel(level)
        converter_logger.removeHandler(notes)


def export_model(module, inputs: tuple, options: ExportOptions,
                 axes: dict[int, dict[int, str]] | None = None) -> tuple[onnx.ModelProto, list[str]]:
    """torch.onnx.export with deploykit's choices: the written model and the exporter's opset notes.

    `axes` (input position -> {axis: symbol}) are the resolved dynamic axes; None resolves
    `options.dynamic_axes` here.  A refusal raises ExportFailed with the exporter's own reason on one line.
    """
    torch = lazy_import("torch", "torch", "torch")
    axes = resolve(options.dynamic_axes, inputs) if axes is None else axes
    kwargs = _export_kwargs(torch, inputs, options, axes)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    notes = _VersionNotes()
    try:
        with _quiet_exporter(notes):
            torch.onnx.export(module, inputs, str(options.output), **kwargs)
    except Exception as error:  # noqa: BLE001 - the exporter's refusal is the finding
        which = _exporter_name(torch, options.exporter)
        raise ExportFailed(f"torch.onnx.export ({which} exporter) refused the model: {_refusal(error)}") from None
    return onnx.load(str(options.output)), notes.notes


def _refusal(error: BaseException) -> str:
    """The exporter's own reason: the innermost cause, not the 'step 1/3' boilerplate around it."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {one_line(error, limit=400)}"


def _opset_warning(requested: int, written: int, notes: list[str], exporter: str) -> str | None:
    if requested == written:
        return None
    cause = f": {notes[-1]}" if notes else ""
    hint = "; --exporter torchscript writes older opsets directly" if exporter == "dynamo" and requested < written else ""
    return f"asked for opset {requested}, the file has opset {written} (the exporter's conversion failed{cause}){hint}"


def _tolerance(options: ExportOptions) -> tuple[float, float]:
    rtol, atol = MODEL_TOLERANCE[options.dtype]
    return (options.rtol if options.rtol is not None else rtol, options.atol if options.atol is not None else atol)


def _second_size(module, inputs: tuple, model: onnx.ModelProto, options: ExportOptions,
                 axes: dict[int, dict[int, str]]) -> list[OutputCheck]:
    """With dynamic axes, the same verification at a second size (or one row saying why not)."""
    grown, why_not = second_size_inputs(module, inputs, axes)
    if grown is None:
        reason = f"no second size along dynamic axes {describe(axes, len(inputs))} runs in eager torch: {why_not}"
        return [OutputCheck("torch-cpu", "*", "unverified", reason)]
    return verify_outputs(module, grown, model, options.verify_backends, _tolerance(options))


def run_export(target: str, module, inputs: tuple, options: ExportOptions) -> ExportReport:
    """Export, check, verify (at a second size too with dynamic axes) and localise every layer.

    For float16 the module is halved in place: it was built for this export, and modules with
    weight_norm cannot be deep-copied.
    """
    torch = lazy_import("torch", "torch", "torch")
    axes = resolve(options.dynamic_axes, inputs)
    module = module.eval()
    if options.dtype == "float16":
        module = module.half()
        inputs = tuple(t.half() if t.is_floating_point() else t for t in inputs)
    model, notes = export_model(module, inputs, options, axes)
    written, exporter = default_opset(model), _exporter_name(torch, options.exporter)
    report = ExportReport(
        target=target, onnx_path=str(options.output), exporter=exporter,
        opset=written, dtype=options.dtype, opset_requested=options.opset,
        opset_warning=_opset_warning(options.opset, written, notes, exporter),
        dynamic_axes={input_names(len(inputs))[index]: named for index, named in sorted(axes.items())},
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as error:  # noqa: BLE001
        report.checker = f"failed: {one_line(error, limit=240)}"
    report.outputs = verify_outputs(module, inputs, model, options.verify_backends, _tolerance(options))
    if axes:
        report.outputs += _second_size(module, inputs, model, options, axes)
    report.layers = check_layers(model, inputs, options.verify_backends, module)
    failing = (
        report.checker != "ok"
        or any(o.verdict not in ("pass", "unsupported", "unavailable") for o in report.outputs)
        or any(layer.failures() or layer.problem for layer in report.layers)
    )
    report.exit_code = 1 if failing else 0
    return report
