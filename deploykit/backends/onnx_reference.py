"""`onnx-reference`: `onnx.reference.ReferenceEvaluator`, the ONNX project's Python runtime."""

from __future__ import annotations

import numpy as np

from deploykit.backends.base import Availability, Backend, CallableRunner
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

    def accumulation(self, dtype: str) -> str:
        # Its col2im adds one kernel tap at a time in the input dtype, so fp16 sums round in fp16.
        return dtype

    def runner(self, case: Case, threads: int | None = None) -> CallableRunner:
        from onnx.reference import ReferenceEvaluator

        state: dict = {}

        def prepare() -> None:
            state["evaluator"] = ReferenceEvaluator(case.model)

        def infer(feeds: dict[str, np.ndarray]) -> np.ndarray:
            return np.asarray(state["evaluator"].run(None, feeds)[0])

        return CallableRunner(infer, prepare)
