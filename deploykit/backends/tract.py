"""`tract-cpu`: Sonos tract through its Python bindings.

`RunnableFromOnnx` is the loader (ONNX bytes + build config -> runnable model; the bindings load
from a path only, so the bytes go through a temporary file).  Measured on tract 0.23.9
(tests/op/test_accumulation.py, tests/backends/test_cpu_runtimes.py):
- float16 sums each kernel tap's channels in float32, rounds it to float16, and adds the bias and
  then the taps one by one in float16 (the bias first, unlike torch): TapSums(bias_first);
- the fp16 build precision (tract's FloatPrecision f32 -> f16 transform) runs a float32 model that
  way on float16-rounded operands; tract has no bfloat16 (refused at load).  The transform rewrites
  the model's types whatever the CPU (tract carries its own float16 kernels), and the typed model
  says what it did: the runner reads its input facts back (`applied_precision`), so a model the
  transform leaves as it was (float64: it lowers float32 only) is `unsupported` at fp16, not a pass;
- a Rust panic crosses the FFI and aborts the process (e.g. output_shape together with SAME_*):
  the backend declares `aborts_process`, so deploykit runs it in a child process where it is not
  already isolated, and a panic costs one `crash`;
- outputs are named after the producing node, not the graph output: they are mapped back by position.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from deploykit.backends.base import AppliedPrecision, Availability, Backend, BuildConfig, Capabilities, ReproRecipe, TensorMeta, pinned
from deploykit.backends.timing import host_timed
from deploykit.errors import lazy_import
from deploykit.onnxio.read import ONNX_TO_DTYPE, graph_inputs
from deploykit.onnxio.write import Case
from deploykit.op.bound import Accumulation, OneSum, TapSums

_NUMPY_NAMES = {"f16": "float16", "f32": "float32", "f64": "float64"}
#: a float input fact's element type -> the build precision a model typed so runs in
_PRECISION_OF_FACT = {"f16": "fp16", "f32": "fp32", "f64": "float64"}


def _quiet_panics() -> None:
    """A Rust backtrace costs about 100 ms per refusal and floods the message: off unless asked for."""
    os.environ.setdefault("RUST_LIB_BACKTRACE", "0")


@dataclass(frozen=True)
class RunnableFromOnnx:
    """Loader: (typed model, runnable) for ONNX bytes, lowered to float16 under the fp16 precision."""

    model_bytes: bytes
    config: BuildConfig

    def __call__(self):
        tract = lazy_import("tract", "tract", "tract")
        _quiet_panics()
        handle, path = tempfile.mkstemp(suffix=".onnx")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(self.model_bytes)
            model = tract.onnx().load(path).into_model()
        finally:
            os.unlink(path)
        if self.config.precision == "fp16":
            model.transform(tract.FloatPrecision(tract.DatumType.F32, tract.DatumType.F16))
        facts = [str(model.input_fact(i)) for i in range(model.input_count())]
        return facts, model.into_runnable()


class TractRunner:
    """One runnable model; inputs are positional in graph order, outputs mapped to the graph's names."""

    def __init__(self, load: Callable[[], tuple], case: Case, precision: str = "fp32") -> None:
        self._load = load
        self._precision = precision
        self._inputs = [gi.name for gi in graph_inputs(case.model)]
        self._outputs = [(o.name, ONNX_TO_DTYPE.get(o.type.tensor_type.elem_type)) for o in case.model.graph.output]
        self.runnable: Any = None  # tract's runnable model once activated (Any: tract has no type hints)

    def activate(self) -> None:
        self._facts, self.runnable = self._load()

    def input_metadata(self) -> list[TensorMeta]:
        metas = []
        for name, fact in zip(self._inputs, self._facts):  # facts read "1,4,5,5,f32"
            *dims, kind = fact.split(",")
            metas.append(TensorMeta(name, _NUMPY_NAMES.get(kind, kind), tuple(int(d) if d.isdigit() else None for d in dims)))
        return metas

    def _arrays(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Feeds in graph order; float32 feeds rounded to float16 where the model was lowered
        (tract refuses a mismatched dtype rather than converting it)."""
        arrays = []
        for name, fact in zip(self._inputs, self._facts):
            array = np.ascontiguousarray(feeds[name])
            if fact.endswith("f16") and array.dtype == np.float32:
                array = array.astype(np.float16)
            arrays.append(array)
        return arrays

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = {}
        for (name, dtype), tensor in zip(self._outputs, self.runnable.run(self._arrays(feeds))):
            value = tensor.to_numpy()
            outputs[name] = value.astype(dtype) if dtype and value.dtype != np.dtype(dtype) else value
        return outputs

    def iteration(self, feeds: dict[str, np.ndarray], include_transfers: bool = False) -> Callable[[], float]:
        if include_transfers:
            return host_timed(lambda: self.infer(feeds))
        tract = lazy_import("tract", "tract", "tract")
        tensors = [tract.Tensor.from_numpy(array) for array in self._arrays(feeds)]
        state = self.runnable.spawn_state()
        return host_timed(lambda: state.run(tensors))

    def applied_precision(self) -> AppliedPrecision | None:
        """At fp16, the float types the typed model takes after FloatPrecision f32 -> f16 (read from
        its input facts); None at fp32, where nothing is transformed (the model's own types run)."""
        if self._precision != "fp16":
            return None
        kinds = sorted({fact.rsplit(",", 1)[-1] for fact in self._facts} & set(_PRECISION_OF_FACT))
        evidence = (f"tract's typed model takes {'/'.join(kinds) or 'no float'} inputs"
                    " after its FloatPrecision f32 -> f16 transform")
        if kinds in ([], ["f16"]):
            return AppliedPrecision("fp16", evidence)
        ran = "/".join(_PRECISION_OF_FACT[kind] for kind in kinds)
        return AppliedPrecision(ran, evidence, "the transform lowers float32 only")

    def deactivate(self) -> None:
        self.runnable = None


class TractCpuBackend(Backend):
    name = "tract-cpu"
    description = "Sonos tract (Python bindings), CPU"
    extra = "tract"
    capabilities = Capabilities(device="cpu", dtypes=("float32", "float16", "float64"), precisions=("fp32", "fp16"),
                                aborts_process=True)

    def probe(self) -> Availability:
        try:
            tract = lazy_import("tract", "tract", self.extra)
        except ImportError as error:
            return Availability(False, None, str(error))
        return Availability(True, tract.version())

    def accumulation(self, dtype: str, config: BuildConfig = BuildConfig()) -> tuple[Accumulation, ...]:
        if dtype == "float16":
            return (TapSums("float32", "float16", bias_first=True),)
        if dtype == "float32" and config.precision == "fp16":
            return (TapSums("float32", "float16", bias_first=True, operands="float16"),)
        return (OneSum(dtype),)

    def load(self, case: Case, config: BuildConfig) -> TractRunner:
        return TractRunner(RunnableFromOnnx(case.model_bytes, config), case, config.precision)

    def repro_recipe(self, spec, version: str | None) -> ReproRecipe:
        run = (
            "def run(model_path, feeds):  # a panic inside tract aborts the process (exit code 134)\n"
            "    runnable = tract.onnx().load(model_path).into_model().into_runnable()\n"
            "    return runnable.run([feeds[name] for name in FEEDS])[0].to_numpy()\n"
        )
        return ReproRecipe("tract", pinned("tract", version), "tract.version()", "import tract", run)
