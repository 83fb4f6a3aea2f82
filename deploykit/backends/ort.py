"""ONNX Runtime backends: `ort-cpu` (CPUExecutionProvider) and `ort-cuda` (CUDAExecutionProvider)."""

from __future__ import annotations

import numpy as np

from deploykit.backends.base import Availability, Backend
from deploykit.errors import lazy_import
from deploykit.onnxgen import Case
from deploykit.spec import ConvTransposeSpec


class OrtRunner:
    """One InferenceSession; `activate` builds it so model refusals surface there."""

    def __init__(self, model_bytes: bytes, provider: str, threads: int | None) -> None:
        self._model_bytes = model_bytes
        self._provider = provider
        self._threads = threads
        self.session = None
        self.run_options = None

    def activate(self) -> None:
        ort = lazy_import("onnxruntime", "onnxruntime")
        ort.set_default_logger_severity(4)
        self.run_options = ort.RunOptions()
        self.run_options.log_severity_level = 4
        options = ort.SessionOptions()
        options.log_severity_level = 4  # refusals are reported as verdicts, not log spam
        if self._threads:
            options.intra_op_num_threads = self._threads
        self.session = ort.InferenceSession(self._model_bytes, options, providers=[self._provider])

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feeds, self.run_options)[0]

    def deactivate(self) -> None:
        self.session = None


class OrtCpuBackend(Backend):
    name = "ort-cpu"
    description = "ONNX Runtime, CPUExecutionProvider"
    provider = "CPUExecutionProvider"
    #: dtypes the provider registers a ConvTranspose kernel for (onnxruntime docs/OperatorKernels.md)
    kernel_dtypes = ("float32", "float16")

    def probe(self) -> Availability:
        try:
            ort = lazy_import("onnxruntime", "onnxruntime")
        except ImportError as error:
            return Availability(False, None, str(error))
        if self.provider not in ort.get_available_providers():
            return Availability(False, ort.__version__, f"{self.provider} is not in this onnxruntime build")
        return Availability(True, ort.__version__)

    def unsupported_reason(self, spec: ConvTransposeSpec) -> str | None:
        if spec.dtype not in self.kernel_dtypes:
            return f"{self.provider} has no {spec.dtype} ConvTranspose kernel"
        return None

    def runner(self, case: Case, threads: int | None = None) -> OrtRunner:
        return OrtRunner(case.model_bytes, self.provider, threads)
