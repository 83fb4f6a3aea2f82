"""ONNX Runtime backends: `ort-cpu` (CPUExecutionProvider) and `ort-cuda` (CUDAExecutionProvider).

`SessionFromOnnx` is the loader (model bytes + provider + build config -> InferenceSession, after
Polygraphy's `SessionFromOnnx`); `OrtRunner` runs whatever session its loader builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from deploykit.backends.base import Availability, Backend, BuildConfig, Capabilities, ReproRecipe, TensorMeta, pinned
from deploykit.bound import Accumulation, OneSum, SumThenBias
from deploykit.errors import lazy_import
from deploykit.onnxgen import Case
from deploykit.timing import host_timed

#: onnxruntime's tensor(...) type names -> NumPy dtype names
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(bfloat16)": "bfloat16", "tensor(int64)": "int64", "tensor(int32)": "int32"}


@dataclass(frozen=True)
class SessionFromOnnx:
    """Loader: an InferenceSession for `model_bytes` on one provider; refusals raise here."""

    model_bytes: bytes
    provider: str
    config: BuildConfig
    provider_options: dict = field(default_factory=dict)

    def __call__(self):
        ort = lazy_import("onnxruntime", "onnxruntime")
        ort.set_default_logger_severity(4)
        options = ort.SessionOptions()
        options.log_severity_level = 4  # refusals are reported as verdicts, not log spam
        if self.config.threads:
            options.intra_op_num_threads = self.config.threads
        session = ort.InferenceSession(self.model_bytes, options, providers=[(self.provider, self.provider_options)])
        if self.provider not in session.get_providers():
            raise RuntimeError(f"{self.provider} could not be enabled; session runs on {session.get_providers()}")
        return session


class OrtRunner:
    """One InferenceSession from its loader; `activate` builds it so model refusals surface there."""

    def __init__(self, load_session: Callable[[], object], device: str = "cpu") -> None:
        self._load_session = load_session
        self._device = device
        self.session = None
        self.run_options = None

    def activate(self) -> None:
        ort = lazy_import("onnxruntime", "onnxruntime")
        self.run_options = ort.RunOptions()
        self.run_options.log_severity_level = 4
        self.session = self._load_session()

    def input_metadata(self) -> list[TensorMeta]:
        return [
            TensorMeta(i.name, _ORT_TYPES.get(i.type, i.type), tuple(d if isinstance(d, int) else None for d in i.shape))
            for i in self.session.get_inputs()
        ]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feeds, self.run_options)))

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
    #: dtypes the provider registers a ConvTranspose kernel for (onnxruntime docs/OperatorKernels.md)
    capabilities = Capabilities(device="cpu", dtypes=("float32", "float16"))
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

    def provider_options(self, config: BuildConfig) -> dict:
        return {}

    def load(self, case: Case, config: BuildConfig) -> OrtRunner:
        loader = SessionFromOnnx(case.model_bytes, self.provider, config, self.provider_options(config))
        return OrtRunner(loader, self.device)

    def repro_recipe(self, spec, version: str | None) -> ReproRecipe:
        package = "onnxruntime" if self.device == "cpu" else "onnxruntime-gpu"
        run = (
            "def run(model_path, feeds):\n"
            "    onnxruntime.set_default_logger_severity(4)  # the refusal is printed once, by repro.py\n"
            f"    providers = [({self.provider!r}, {self.provider_options(BuildConfig())!r})]\n"
            "    session = onnxruntime.InferenceSession(model_path, providers=providers)\n"
            "    return session.run(None, feeds)[0]\n"
        )
        return ReproRecipe("onnxruntime", pinned(package, version), "onnxruntime.__version__", "import onnxruntime", run)


class OrtCudaBackend(OrtCpuBackend):
    """CUDAExecutionProvider from onnxruntime-gpu.  TF32 is off (`use_tf32=0`) unless the build
    precision is tf32, so float32 is judged as float32."""

    name = "ort-cuda"
    description = "ONNX Runtime, CUDAExecutionProvider (onnxruntime-gpu)"
    provider = "CUDAExecutionProvider"
    capabilities = Capabilities(device="cuda", dtypes=("float32", "float16", "float64"), precisions=("fp32", "tf32"))
    missing_hint = "pip install onnxruntime-gpu (needs an NVIDIA GPU and CUDA)"

    def load_provider_libraries(self, ort) -> None:
        """onnxruntime-gpu >= 1.21 finds the CUDA/cuDNN wheels' libraries only after preload_dlls()."""
        preload = getattr(ort, "preload_dlls", None)
        if preload is not None:
            try:
                preload()
            except Exception:  # noqa: BLE001 - the provider check in probe() gives the verdict
                pass

    def provider_options(self, config: BuildConfig) -> dict:
        return {"use_tf32": "1" if config.precision == "tf32" else "0"}

    def accumulation(self, dtype: str, config: BuildConfig = BuildConfig()) -> tuple[Accumulation, ...]:
        # Measured on an H200 (onnxruntime-gpu 1.31.1, cuDNN 9.19, tests/test_gpu_fixture.py): float16
        # products are summed in float32 and rounded once (exact on 120 accumulation probes); the bias
        # takes one of two paths.  With explicit symmetric pads cuDNN's result is rounded to float16
        # and the bias added apart (cudnnAddTensor), which rounds again; with asymmetric pads or
        # SAME_* the bias joins the float32 sum.  Each path's emulation matches its configs' outputs
        # bit for bit; the bound takes both, since which one runs is ORT's choice, not the caller's.
        if dtype in ("float16", "bfloat16"):
            return (OneSum("float32"), SumThenBias("float32", dtype))
        if dtype == "float32" and config.precision == "tf32":
            return (OneSum("float32", operands="tfloat32"),)
        return super().accumulation(dtype, config)
