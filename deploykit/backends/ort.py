"""ONNX Runtime backends: `ort-cpu` (CPUExecutionProvider) and `ort-cuda` (CUDAExecutionProvider).

`SessionFromOnnx` is the loader (model bytes + provider + build config -> InferenceSession, after
Polygraphy's `SessionFromOnnx`); `OrtRunner` runs whatever session its loader builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from deploykit.backends.base import Availability, Backend, BuildConfig, Capabilities, ReproRecipe, TensorMeta, pinned
from deploykit.backends.gpu_timing import NO_EVENTS, HostOnly, Timed, event_timed, torch_cuda
from deploykit.backends.timing import host_timed
from deploykit.errors import lazy_import
from deploykit.onnxio.write import Case
from deploykit.op.bound import Accumulation, OneSum, SumThenBias

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

    def with_provider_options(self, extra: dict[str, str]) -> "SessionFromOnnx":
        """The same loader with more provider options (a timing session's stream or CUDA graph)."""
        return replace(self, provider_options={**self.provider_options, **extra})


class OrtRunner:
    """One InferenceSession from its loader; `activate` builds it so model refusals surface there."""

    def __init__(self, load_session: Callable[[], object], device: str = "cpu") -> None:
        self._load_session = load_session
        self._device = device
        # onnxruntime's InferenceSession and RunOptions once activated (Any: onnxruntime has no type hints)
        self.session: Any = None
        self.run_options: Any = None
        self._timing_sessions: list = []
        self._stream: Any = None  # torch's CUDA stream ORT computes on while timed (owned here: it must outlive the session)

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

    def iteration(self, feeds: dict[str, np.ndarray], include_transfers: bool = False,
                  cuda_graph: bool = False) -> Timed:
        """IO binding: inputs and outputs live on the provider's device before timing starts, and a
        call is one `run_with_iobinding`, no more (see `timing_run_options`).  On CUDA the samples
        are host latency and GPU compute time (`_cuda_iteration`)."""
        if include_transfers:
            return host_timed(lambda: self.session.run(None, feeds, self.run_options))
        if self._device == "cpu":
            return host_timed(bound_call(self.session, feeds, self._device, timing_run_options()))
        return self._cuda_iteration(feeds, cuda_graph)

    def _cuda_iteration(self, feeds: dict[str, np.ndarray], cuda_graph: bool) -> Timed:
        """A timing session beside the verdict's one, built with what the samples need:
        - CUDA-graph replay: `enable_cuda_graph=1`; ORT captures on an early run (done here, before
          timing) and replays from then on.  Its replay synchronises inside the call, so no event
          can bracket the GPU work alone: host latency only.
        - otherwise, with torch's CUDA: ORT computes on a stream deploykit owns
          (`user_compute_stream`), the run does not synchronise, and CUDA events on that stream
          bracket the work (GPU compute); the event synchronise ends the host span.
        - otherwise: the verdict's session, host latency only (the run synchronises its stream)."""
        if cuda_graph:
            session = self._timing_session({"enable_cuda_graph": "1"})
            call = bound_call(session, feeds, self._device, timing_run_options(), fixed_outputs=True)
            for _ in range(GRAPH_CAPTURE_RUNS):
                call()
            return HostOnly(call, "host latency only: ORT's CUDA-graph replay synchronises inside the call")
        torch = torch_cuda()
        if torch is None:
            return HostOnly(bound_call(self.session, feeds, self._device, timing_run_options()), NO_EVENTS)
        self._stream = torch.cuda.Stream()
        session = self._timing_session({"user_compute_stream": str(self._stream.cuda_stream)})
        return event_timed(bound_call(session, feeds, self._device, timing_run_options(synchronize=False)), self._stream)

    def _timing_session(self, provider_options: dict[str, str]):
        """A second session of the same model and build options, plus `provider_options`."""
        loader = getattr(self._load_session, "with_provider_options", None)
        if loader is None:
            raise RuntimeError("GPU timing needs a session loader that takes provider options")
        session = loader(provider_options)()
        self._timing_sessions.append(session)
        return session

    def deactivate(self) -> None:
        self.session = None
        self._timing_sessions.clear()
        self._stream = None


#: Regular runs before timing a CUDA-graph session: ORT captures on an early run (after at least one
#: regular run, which allocates what the graph will use); the rest make sure the capture is done.
GRAPH_CAPTURE_RUNS = 3
#: onnxruntime's run-option keys (onnxruntime_run_options_config_keys.h)
_GRAPH_ID = "gpu_graph_id"
_NO_SYNC = "disable_synchronize_execution_providers"


def timing_run_options(synchronize: bool = True):
    """The RunOptions of a timed call, with every key ORT would otherwise look up and miss set.

    onnxruntime's Python `run_with_iobinding` (1.31) reads the run option `gpu_graph_id` of any
    RunOptions it is given; when it is unset the lookup raises inside ORT and is caught in Python,
    which costs tens of microseconds per call (about 28 us measured on a 2-core x86-64 machine)
    before the run even starts.  Setting it to "0", ORT's default graph id, makes that lookup cheap
    and changes nothing else.  `synchronize=False` stops ORT from synchronising the CUDA stream at
    the end of the run, so that an event recorded after the call still brackets the work alone.
    """
    ort = lazy_import("onnxruntime", "onnxruntime")
    options = ort.RunOptions()
    options.log_severity_level = 4
    options.add_run_config_entry(_GRAPH_ID, "0")
    if not synchronize:
        options.add_run_config_entry(_NO_SYNC, "1")
    return options


def bound_call(session, feeds: dict[str, np.ndarray], device: str, run_options,
               fixed_outputs: bool = False) -> Callable[[], None]:
    """One `run_with_iobinding` of `session` with its inputs on `device` and its outputs allocated by
    ORT on the first run and reused from then on: the call does nothing else (no synchronise, no
    rebinding), as a bare IO-binding loop.  Where ORT refuses to reuse an output (its shape
    inference disagrees with the kernel: SAME + output_padding), each call binds a fresh one,
    unless `fixed_outputs` (a CUDA graph needs fixed addresses), which raises instead."""
    ort = lazy_import("onnxruntime", "onnxruntime")
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
    outputs = [o.name for o in session.get_outputs()]
    for name in outputs:
        binding.bind_output(name, device)
    session.run_with_iobinding(binding, run_options)  # allocates the outputs once
    try:
        for name, value in zip(outputs, binding.get_outputs()):
            binding.bind_ortvalue_output(name, value)  # ... and reuses them from now on
        session.run_with_iobinding(binding, run_options)
    except Exception as error:  # noqa: BLE001
        if fixed_outputs:
            raise RuntimeError(f"CUDA-graph replay needs fixed output buffers and ORT refused to reuse one: {error}") from None
        return _rebinding_call(session, binding, outputs, device, run_options)
    return lambda: session.run_with_iobinding(binding, run_options)


def _rebinding_call(session, binding, outputs: list[str], device: str, run_options) -> Callable[[], None]:
    def call() -> None:
        binding.clear_binding_outputs()
        for name in outputs:
            binding.bind_output(name, device)
        session.run_with_iobinding(binding, run_options)

    return call


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
    capabilities = Capabilities(device="cuda", dtypes=("float32", "float16", "float64"), precisions=("fp32", "tf32"),
                                cuda_graphs=True)
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
        # Measured on an H200 (onnxruntime-gpu 1.31.1, cuDNN 9.19, tests/backends/test_gpu_fixture.py): float16
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
