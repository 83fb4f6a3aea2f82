"""`onnx-reference`: `onnx.reference.ReferenceEvaluator`, the ONNX project's Python runtime."""

from __future__ import annotations

import numpy as np

from deploykit.backends.base import Availability, Backend, CallableRunner
from deploykit.bound import Accumulation, TapSums
from deploykit.onnxgen import Case


class OnnxReferenceBackend(Backend):
    name = "onnx-reference"
    description = "onnx.reference.ReferenceEvaluator (pure NumPy)"

    def probe(self) -> Availability:
        try:
            import onnx
        except ImportError as error:  # onnx is core, but say so plainly if it is broken
            return Availability(False, None, f"onnx does not import: {error}")
        return Availability(True, onnx.__version__)

    def accumulation(self, dtype: str) -> tuple[Accumulation, ...]:
        # Measured (tests/test_accumulation.py): float16 runs a float32-accumulating NumPy GEMM per
        # kernel tap, rounds it to float16, and its col2im adds the taps (then the bias) in float16.
        # bfloat16 is upcast to float32 for the whole computation and rounded once.
        if dtype == "float16":
            return (TapSums("float32", "float16"),)
        return super().accumulation(dtype)

    def runner(self, case: Case, threads: int | None = None) -> CallableRunner:
        from onnx.reference import ReferenceEvaluator

        state: dict = {}

        def prepare() -> None:
            state["evaluator"] = ReferenceEvaluator(case.model)

        def infer(feeds: dict[str, np.ndarray]) -> np.ndarray:
            return np.asarray(state["evaluator"].run(None, feeds)[0])

        return CallableRunner(infer, prepare)
