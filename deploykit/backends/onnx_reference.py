"""`onnx-reference`: `onnx.reference.ReferenceEvaluator`, the ONNX project's Python runtime."""

from __future__ import annotations

import numpy as np

from deploykit.backends.base import Availability, Backend, BuildConfig, CallableRunner, Capabilities, ReproRecipe, case_inputs, pinned
from deploykit.onnxio.write import Case
from deploykit.op.bound import Accumulation, TapSums


class OnnxReferenceBackend(Backend):
    name = "onnx-reference"
    description = "onnx.reference.ReferenceEvaluator (pure NumPy)"
    capabilities = Capabilities(reference=True)

    def probe(self) -> Availability:
        try:
            import onnx
        except ImportError as error:  # onnx is core, but say so plainly if it is broken
            return Availability(False, None, f"onnx does not import: {error}")
        return Availability(True, onnx.__version__)

    def accumulation(self, dtype: str, config: BuildConfig = BuildConfig()) -> tuple[Accumulation, ...]:
        # Measured (tests/op/test_accumulation.py): float16 runs a float32-accumulating NumPy GEMM per
        # kernel tap, rounds it to float16, and its col2im adds the taps (then the bias) in float16.
        # bfloat16 is upcast to float32 for the whole computation and rounded once.
        if dtype == "float16":
            return (TapSums("float32", "float16"),)
        return super().accumulation(dtype, config)

    def load(self, case: Case, config: BuildConfig) -> CallableRunner:
        from onnx.reference import ReferenceEvaluator

        state: dict = {}
        names = case.output_names

        def prepare() -> None:
            state["evaluator"] = ReferenceEvaluator(case.model)

        def infer(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {name: np.asarray(value) for name, value in zip(names, state["evaluator"].run(None, feeds))}

        return CallableRunner(infer, prepare, case_inputs(case))

    def repro_recipe(self, spec, version: str | None) -> ReproRecipe:
        run = (
            "def run(model_path, feeds):\n"
            "    return ReferenceEvaluator(model_path).run(None, feeds)[0]\n"
        )
        return ReproRecipe("onnx.reference", pinned("onnx", version), "onnx.__version__",
                           "import onnx\nfrom onnx.reference import ReferenceEvaluator", run)
