"""`reference`: deploykit's own float64 oracle run as a backend.

It checks the plumbing end to end (generator, inputs, shapes) and refuses spec-invalid configs,
so a negative case has one backend that behaves exactly as the spec demands.
"""

from __future__ import annotations

import numpy as np

from deploykit.backends.base import Availability, Backend, BuildConfig, CallableRunner, Capabilities, case_inputs
from deploykit.onnxio.write import NUMPY_DTYPES, Case
from deploykit.op.bound import OneSum


class ReferenceBackend(Backend):
    name = "reference"
    description = "deploykit float64 NumPy oracle (GEMM + col2im)"
    capabilities = Capabilities(loads_onnx=False, loads_spec=True, reference=True)

    def probe(self) -> Availability:
        return Availability(True, np.__version__)

    def accumulation(self, dtype: str, config: BuildConfig = BuildConfig()) -> tuple[OneSum, ...]:
        return (OneSum("float64"),)

    def load(self, case: Case, config: BuildConfig) -> CallableRunner:
        from deploykit.op.reference import run_spec

        spec, w = case.require_spec(), case.require_weights()
        [output] = case.output_names

        def prepare() -> None:
            problems = spec.violations()
            if problems:
                raise ValueError("; ".join(problems))

        def infer(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            b = feeds.get("B", case.b)
            y = run_spec(spec, feeds[case.input_name], feeds.get("W", w), b if spec.bias else None)
            return {output: y.astype(NUMPY_DTYPES[spec.dtype])}

        return CallableRunner(infer, prepare, case_inputs(case))
