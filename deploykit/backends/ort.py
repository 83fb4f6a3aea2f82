"""ONNX Runtime backends: `ort-cpu` (CPUExecutionProvider) and `ort-cuda` (CUDAExecutionProvider)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from deploykit.backends.base import Availability, Backend
from deploykit.bound import OneSum
from deploykit.errors import lazy_import
from deploykit.onnxgen import Case
from deploykit.spec import ConvTransposeSpec
from deploykit.timing import host_timed


class OrtRunner:
    """One InferenceSession; `activate` builds it so model refusals surface there."""

    def __init__(
        self,
        model_bytes: bytes,
        provider: str,
        threads: int | None,
        provider_options: dict | None = None,
        device: str = "cpu",
    ) -> None:
        self._model_bytes = model_bytes
        self._provider = provider
        self._provider_options = provider_options or {}
        self._threads = threads
        self._device = device
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
        self.session = ort.InferenceSession(
            self._model_bytes, options, providers=[(self._provider, self._provider_options)]
        )
        if self._provider not in self.session.get_providers():
            raise RuntimeError(f"{self._provider} could not be enabled; session runs on {self.session.get_providers()}")

    @property
    def threads(self) -> int | None:
        return self._threads

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feeds, self.run_options)[0]

    def iteration(self, feeds: dict[str, np.ndarray], include_transfers: bool = False) -> Callable[[], float]:
        """IO binding: inputs and outputs live on the provider's device before timing starts."""
        if include_transfers:
            return host_timed(lambda: self.session.run(None, feeds, self.run_options))
        ort = lazy_import("onnxruntime", "onnxruntime")
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, self._device, 0))
        outputs = [o.name for o in self.session.get_outputs()]
        for name in outputs:
            binding.bind_output(name, self._device)
        self.session.run_with_iobinding(binding, self.run_options)  # allocates the outputs once
        allocated = binding.get_outputs()
        rebind = False
        try:
            for name, value in zip(outputs, allocated):
                binding.bind_ortvalue_output(name, value)  # ... and reuses them from now on
            self.session.run_with_iobinding(binding, self.run_options)
        except Exception:  # noqa: BLE001
            # ORT checks a reused output against its own shape inference; where that disagrees
            # with what the kernel computes (SAME + output_padding), bind a fresh output per call.
            rebind = True

        def call() -> None:
            if rebind:
                binding.clear_binding_outputs()
                for name in outputs:
                    binding.bind_output(name, self._device)
            self.session.run_with_iobinding(binding, self.run_options)
            if self._device != "cpu":
                binding.synchronize_outputs()

        return host_timed(call)

    def deactivate(self) -> None:
        self.session = None


class OrtCpuBackend(Backend):
    name = "ort-cpu"
    description = "ONNX Runtime, CPUExecutionProvider"
    provider = "CPUExecutionProvider"
    device = "cpu"
    #: dtypes the provider registers a ConvTranspose kernel for (onnxruntime docs/OperatorKernels.md)
    kernel_dtypes: tuple[str, ...] = ("float32", "float16")
    missing_hint = "pip install onnxruntime"

    def probe(self) -> Availability:
        try:
            ort = lazy_import("onnxruntime", "onnxruntime")
        except ImportError as error:
            return Availability(False, None, str(error))
        self.load_provider_libraries(ort)
        if self.provider not in ort.get_available_providers():
            return Availability(
                False, ort.__version__, f"{self.provider} is not in this onnxruntime build; {self.missing_hint}"
            )
        return Availability(True, ort.__version__)

    def load_provider_libraries(self, ort) -> None:
        """Nothing to load for the CPU provider."""

    def unsupported_reason(self, spec: ConvTransposeSpec) -> str | None:
        if spec.dtype not in self.kernel_dtypes:
            return f"{self.provider} has no {spec.dtype} ConvTranspose kernel"
        return None

    def provider_options(self) -> dict:
        return {}

    def runner(self, case: Case, threads: int | None = None) -> OrtRunner:
        return OrtRunner(case.model_bytes, self.provider, threads, self.provider_options(), self.device)


class OrtCudaBackend(OrtCpuBackend):
    """CUDAExecutionProvider from onnxruntime-gpu.  TF32 is off (`use_tf32=0`) for conformance,
    so float32 is judged as float32; `precision="tf32"` allows it."""

    name = "ort-cuda"
    description = "ONNX Runtime, CUDAExecutionProvider (onnxruntime-gpu)"
    provider = "CUDAExecutionProvider"
    device = "cuda"
    kernel_dtypes = ("float32", "float16", "float64")
    missing_hint = "pip install onnxruntime-gpu (needs an NVIDIA GPU and CUDA)"
    precision = "fp32"

    def load_provider_libraries(self, ort) -> None:
        """onnxruntime-gpu >= 1.21 finds the CUDA/cuDNN wheels' libraries only after preload_dlls()."""
        preload = getattr(ort, "preload_dlls", None)
        if preload is not None:
            try:
                preload()
            except Exception:  # noqa: BLE001 - the provider check in probe() gives the verdict
                pass

    def provider_options(self) -> dict:
        return {"use_tf32": "1" if self.precision == "tf32" else "0"}

    def accumulation(self, dtype: str) -> tuple[OneSum, ...]:
        if dtype == "float32" and self.precision == "tf32":
            return (OneSum("tfloat32"),)
        return super().accumulation(dtype)
