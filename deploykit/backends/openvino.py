"""`openvino-cpu`: the OpenVINO runtime's CPU plugin, its INFERENCE_PRECISION_HINT as build precisions.

`CompiledModelFromOnnx` is the loader (ONNX bytes + build config -> compiled model); the runner
feeds and reads tensors of exactly each port's element type.  Measured on OpenVINO 2026.4.1
(tests/op/test_accumulation.py, tests/backends/test_cpu_runtimes.py):
- the plugin's default precision is machine-dependent (bf16 on CPUs with AVX512-BF16 or AMX-BF16), so
  the hint is always sent: fp32 -> f32, fp16 -> f16, bf16 -> bf16;
- the plugin replaces a hint the CPU has no arithmetic for: on a CPU without AVX512-FP16/AMX-FP16
  the f16 hint reads back bf16, and OPTIMIZATION_CAPABILITIES lists no FP16 (measured on an AMD EPYC
  with AVX512-BF16 and no AMX).  After compiling, the runner reads back what ran (`applied_precision`) from two
  sources, each for its own question: the compiled model's INFERENCE_PRECISION_HINT says whether the
  plugin took the hint for the model (its documented answer), and the runtime model's per-layer
  `runtimePrecision` (`executed_kernels`) says whether the layer deploykit judges ran in it.  fp16 or
  bf16 counts as applied only when both agree: the hint alone would pass a bf16 row whose
  Deconvolution ran in f32 (the plugin keeps it there under the bf16 hint) against a bound made for
  bf16 operands, far too wide for a float32 result (measured on one 2-D float32 config: bound_ratio
  6.9e-6, where the float32 bound gives the same output 0.086).  fp32 means the model's own
  types, so only the hint (f32) is checked: a bfloat16 model runs a bf16 Deconvolution at fp32;
- on AVX512-BF16 without AMX, a float16 model is upcast to f32 under the f32 and the bf16 hint alike
  (its Deconvolution runs f32): at bf16 it is `unsupported` for that reason;
- float16 and bfloat16 models sum in float32 and round once, except that a bias given as a graph
  input is added by a separate Add in the narrow type (SumThenBias);
- the f16 hint rounds a float32 model's inputs, weights and bias to float16, sums in float32 and
  rounds the result to float16; the bf16 hint is not applied to ConvTranspose (it is to Conv): such
  a row is `unsupported` (above), and bf16 declares both the lowered and the float32 model for a
  Deconvolution that does run bf16 (none seen yet);
- float64 is computed in float32 by design (openvino#4681): `unsupported`;
- the Python API maps bf16 to NumPy float16 and converts mismatched arrays by value, so an
  ml_dtypes.bfloat16 array passed to `infer()` becomes wrong inputs without an error: bf16 goes in
  and out as its raw 16 bits, and any other dtype mismatch raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import ml_dtypes
import numpy as np

from deploykit.backends import cpu_features
from deploykit.backends.base import AppliedPrecision, Availability, Backend, BuildConfig, Capabilities, ReproRecipe, TensorMeta, pinned
from deploykit.backends.timing import host_timed
from deploykit.errors import lazy_import
from deploykit.onnxio.write import Case
from deploykit.op.bound import Accumulation, OneSum, SumThenBias

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
#: build precision -> INFERENCE_PRECISION_HINT (the CPU plugin accepts f32, f16, bf16, undefined)
HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
#: the compiled model's INFERENCE_PRECISION_HINT -> the build precision it is
PRECISION_OF_HINT = {hint: precision for precision, hint in HINTS.items()}
_NUMPY_NAMES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "f64": "float64", "i64": "int64", "i32": "int32"}


@dataclass(frozen=True)
class CompiledModelFromOnnx:
    """Loader: ONNX bytes compiled for the CPU plugin under the build config's precision hint."""

    model_bytes: bytes
    config: BuildConfig

    def __call__(self):
        ov = lazy_import("openvino", "openvino", "openvino")
        core = ov.Core()
        model = core.read_model(model=self.model_bytes, weights=b"")  # self-contained ONNX: no weights file
        properties = {"INFERENCE_PRECISION_HINT": HINTS[self.config.precision], "PERFORMANCE_HINT": "LATENCY",
                      "NUM_STREAMS": 1}
        if self.config.threads:
            properties["INFERENCE_NUM_THREADS"] = int(self.config.threads)
        return core.compile_model(model, "CPU", properties)


class OpenVinoRunner:
    """One compiled model and its infer request, built for build precision `precision`."""

    def __init__(self, load_compiled: Callable[[], object], precision: str = "fp32") -> None:
        self._load_compiled = load_compiled
        self.precision = precision
        # OpenVINO's CompiledModel and InferRequest once activated (Any: openvino has no type hints)
        self.compiled: Any = None
        self.request: Any = None

    def activate(self) -> None:
        self._ov = lazy_import("openvino", "openvino", "openvino")
        self.compiled = self._load_compiled()
        self.request = self.compiled.create_infer_request()
        self.inputs = {port.get_any_name(): port for port in self.compiled.inputs}

    def input_metadata(self) -> list[TensorMeta]:
        metas = []
        for name, port in self.inputs.items():
            shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            kind = port.get_element_type().get_type_name()
            metas.append(TensorMeta(name, _NUMPY_NAMES.get(kind, kind), shape))
        return metas

    def _tensor(self, name: str, array: np.ndarray):
        """A tensor of exactly the port's type; a mismatch raises instead of converting by value."""
        ov, port = self._ov, self.inputs[name]
        kind, array = port.get_element_type(), np.ascontiguousarray(array)
        if kind == ov.Type.bf16:
            if array.dtype != BFLOAT16:
                raise TypeError(f"input {name} is bf16, got {array.dtype}")
            return ov.Tensor(array.view(np.uint16), list(array.shape), ov.Type.bf16)
        tensor = ov.Tensor(array)
        if tensor.get_element_type() != kind:
            raise TypeError(f"input {name} is {kind.get_type_name()}, got {array.dtype}")
        return tensor

    def _output(self, port) -> np.ndarray:
        tensor = self.request.get_tensor(port)
        data = tensor.data  # a bf16 output is a float16 view of the bf16 bits
        if tensor.get_element_type() == self._ov.Type.bf16:
            data = data.view(np.uint16).view(BFLOAT16)
        return np.array(data, copy=True)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, array in feeds.items():
            self.request.set_tensor(name, self._tensor(name, array))
        self.request.infer()
        return {port.get_any_name(): self._output(port) for port in self.compiled.outputs}

    def iteration(self, feeds: dict[str, np.ndarray], include_transfers: bool = False) -> Callable[[], float]:
        """Inputs bound once; each sample runs the request (output copies only with transfers)."""
        self.infer(feeds)
        return host_timed(lambda: self.infer(feeds)) if include_transfers else host_timed(self.request.infer)

    def executed_kernels(self) -> list[tuple[str, str, str]]:
        """(layer type, primitive, runtime precision) of each compute node, from the runtime model:
        says whether a precision hint reached the Deconvolution."""
        rows = []
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            field = lambda key, info=info: info[key].astype(str) if key in info else ""  # noqa: E731
            if field("layerType") not in ("Input", "Output", "Reorder", "Reshape", "Const"):
                rows.append((field("layerType"), field("primitiveType"), field("runtimePrecision")))
        return rows

    def applied_precision(self) -> AppliedPrecision | None:
        """What the compiled model ran, or None when its hint cannot be read (module docstring: a
        reduced precision counts as applied when the hint held and every Deconvolution runs in it)."""
        hint = self._compiled_hint()
        if hint is None:
            return None
        applied = PRECISION_OF_HINT.get(hint, hint)
        evidence = f"OpenVINO's compiled model reads back INFERENCE_PRECISION_HINT {hint} for the {HINTS[self.precision]} hint"
        layers = [] if self.precision == "fp32" else self._deconvolution_precisions()  # fp32: the model's own types
        if applied == self.precision and layers in ([], [hint]):
            return AppliedPrecision(applied, evidence)
        if applied != self.precision:
            evidence += f" (its Deconvolution runs {'/'.join(layers)})" if layers else ""
            return AppliedPrecision(applied, evidence, cpu_features.openvino_lacks(self.precision) or "")
        ran = "/".join(PRECISION_OF_HINT.get(kind, kind) for kind in layers)
        return AppliedPrecision(ran, f"{evidence}, but its Deconvolution runs {'/'.join(layers)}")

    def _compiled_hint(self) -> str | None:
        try:
            return self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        except Exception:  # noqa: BLE001 - a plugin without the property cannot tell: the request stands
            return None

    def _deconvolution_precisions(self) -> list[str]:
        try:
            return sorted({kind for layer, _, kind in self.executed_kernels() if layer == "Deconvolution" and kind})
        except Exception:  # noqa: BLE001 - the detail of a reason, never the reason itself
            return []

    def deactivate(self) -> None:
        self.request = self.compiled = None


class OpenVinoCpuBackend(Backend):
    name = "openvino-cpu"
    description = "OpenVINO runtime, CPU plugin"
    extra = "openvino"
    capabilities = Capabilities(device="cpu", dtypes=("float32", "float16", "bfloat16"), precisions=("fp32", "fp16", "bf16"))

    def probe(self) -> Availability:
        try:
            ov = lazy_import("openvino", "openvino", self.extra)
        except ImportError as error:
            return Availability(False, None, str(error))
        if "CPU" not in ov.Core().available_devices:
            return Availability(False, ov.__version__, "OpenVINO lists no CPU device")
        return Availability(True, ov.__version__.split("-")[0])

    def accumulation(self, dtype: str, config: BuildConfig = BuildConfig()) -> tuple[Accumulation, ...]:
        if dtype in ("float16", "bfloat16"):
            return (OneSum("float32"), SumThenBias("float32", dtype))
        lowered = {"fp16": "float16", "bf16": "bfloat16"}.get(config.precision)
        if dtype == "float32" and lowered:
            # the hint lowers the model (measured for f16), or is not applied (measured for bf16)
            return (OneSum("float32", operands=lowered, result=lowered),
                    SumThenBias("float32", lowered, operands=lowered), OneSum("float32"))
        return super().accumulation(dtype, config)

    def load(self, case: Case, config: BuildConfig) -> OpenVinoRunner:
        return OpenVinoRunner(CompiledModelFromOnnx(case.model_bytes, config), config.precision)

    def repro_recipe(self, spec, version: str | None) -> ReproRecipe:
        return ReproRecipe("OpenVINO", pinned("openvino", version), "openvino.__version__", "import openvino", _OPENVINO_RUN)


#: The CPU plugin with float32 inference (the fp32 build precision); bfloat16 goes in and out as its
#: bits, which is how the Python API takes it.
_OPENVINO_RUN = '''def run(model_path, feeds):
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(model_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    for name, array in feeds.items():
        if array.dtype.name == "bfloat16":
            tensor = openvino.Tensor(array.view(np.uint16), list(array.shape), openvino.Type.bf16)
        else:
            tensor = openvino.Tensor(np.ascontiguousarray(array))
        request.set_tensor(name, tensor)
    request.infer()
    output = request.get_output_tensor(0)
    if output.get_element_type() == openvino.Type.bf16:
        return output.data.view(np.uint16).view(feeds["X"].dtype).copy()
    return np.array(output.data, copy=True)
'''
