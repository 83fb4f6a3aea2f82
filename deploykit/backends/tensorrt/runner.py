"""`tensorrt`: NVIDIA TensorRT through Polygraphy's loaders and its TrtRunner.

The loader is deploykit/backends/tensorrt/engines.py's chain (NetworkFromOnnxBytes -> CreateConfig ->
EngineBytesFromNetwork, behind the engine cache, deserialized by EngineFromBytes); the runner
wraps Polygraphy's TrtRunner.  What is built comes from the build config: its precision, and the
engine profile named by its `profile` hint, else DEPLOYKIT_ENGINE_PROFILE, else `default`
(`engines/profiles/*.yaml`).  A parser or builder refusal surfaces in `activate` with TensorRT's
own messages (Polygraphy logs them and raises a generic error; engines.polygraphy_messages keeps
them), which `execute.run_backend` records as `rejected`.

This backend has never run on real TensorRT or a GPU.  Its accumulation models below are therefore
declared, not measured.

What ran is not read back (no `applied_precision`): fp16/bf16 on a float32 model are builder flags
(TensorRT 10) that permit, not force, the narrow type, and TensorRT 11 has no such flags (the model's
own types are built).  Per-layer precisions are only in the engine inspector's JSON, for engines
built with ProfilingVerbosity.DETAILED, in a layout TensorRT 11 changed; with no GPU run to check a
parser against, a tensorrt fp16/bf16 result means "built with the flag", which the declared models
(narrow and float32) both cover.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx

from deploykit.backends.base import Availability, Backend, BuildConfig, Capabilities, ReproRecipe, TensorMeta, pinned
from deploykit.backends.gpu_timing import NO_EVENTS, HostOnly, Sample, Timed, capture_graph, event_timed, require_torch_cuda, torch_cuda
from deploykit.backends.tensorrt import cuda_driver, engines
from deploykit.backends.tensorrt.cache import EngineCache
from deploykit.backends.tensorrt.profiles import EngineProfile, chosen_profile, load_profile
from deploykit.backends.timing import host_timed
from deploykit.errors import UsageError
from deploykit.onnxio.write import Case
from deploykit.op.bound import Accumulation, OneSum

_NARROW = {"fp16": "float16", "bf16": "bfloat16"}


def _host_array(formatted, dtype: np.dtype) -> np.ndarray:
    """A raw output buffer (Polygraphy's FormattedArray of bytes) as an array of the model's type:
    NumPy has no bfloat16, so the bytes are read here rather than by Polygraphy."""
    shape = tuple(int(d) for d in formatted.shape)
    raw = np.asarray(formatted.array).reshape(-1).view(np.uint8)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if raw.size < size:
        raise RuntimeError(f"TensorRT returned {raw.size} bytes for an output of shape {list(shape)} ({size} expected)")
    return raw[:size].view(dtype).reshape(shape).copy()


class TensorRtRunner:
    """Polygraphy's TrtRunner over an engine loader; every Polygraphy call runs quietly and turns
    a Polygraphy error into engines.EngineRefused with TensorRT's messages."""

    def __init__(self, load_engine: Callable[[], object], outputs: dict[str, np.dtype], cuda_graphs: bool) -> None:
        self._load_engine = load_engine
        self._outputs = outputs
        self._cuda_graphs = cuda_graphs
        self._runner: Any = None  # Polygraphy's TrtRunner once activated (Any: polygraphy has no type hints)
        self._inputs: dict[str, TensorMeta] = {}

    def activate(self) -> None:
        from polygraphy.backend.trt import TrtRunner

        with engines.polygraphy_messages():
            runner = TrtRunner(self._load_engine)
            runner.activate()
            metadata = runner.get_input_metadata(use_numpy_dtypes=False)
        self._runner = runner
        self._inputs = {
            name: TensorMeta(name, dtype.name, tuple(d if isinstance(d, int) and d >= 0 else None for d in shape))
            for name, (dtype, shape) in metadata.items()
        }

    def input_metadata(self) -> list[TensorMeta]:
        return list(self._inputs.values())

    def _device_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each input exactly in the engine's type (Polygraphy copies raw bytes, so a mismatch would
        be wrong values, not an error); bfloat16 travels as its 16-bit pattern."""
        checked = {}
        for name, array in feeds.items():
            expected = self._inputs[name].dtype if name in self._inputs else None
            if expected is not None and array.dtype.name != expected:
                raise TypeError(f"input {name} is {expected} in the engine, got {array.dtype.name}")
            array = np.ascontiguousarray(array)
            checked[name] = array.view(np.uint16) if array.dtype.name == "bfloat16" else array
        return checked

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with engines.polygraphy_messages():
            raw = self._runner.infer(self._device_feeds(feeds), check_inputs=False,
                                     copy_outputs_to_host=True, return_raw_buffers=True)
        return {name: _host_array(raw[name], dtype) for name, dtype in self._outputs.items()}

    def iteration(self, feeds: dict[str, np.ndarray], include_transfers: bool = False,
                  cuda_graph: bool = False) -> Timed:
        """After one inference (inputs on the device, outputs allocated), a sample is one enqueue of
        the execution context, or one replay of its CUDA graph when the profile asks for graphs or
        `cuda_graph` is given.  Each sample is host latency and GPU compute time (CUDA events on the
        runner's stream); without torch's CUDA, host latency of the enqueue and a synchronise."""
        if include_transfers:
            return host_timed(lambda: self.infer(feeds))
        self.infer(feeds)
        runner = self._runner
        stream = runner.stream

        def launch() -> None:
            if not runner.context.execute_async_v3(stream.ptr):
                raise RuntimeError("TensorRT's execute_async_v3 failed")

        if self._cuda_graphs or cuda_graph:
            return _cuda_event_timed(_captured_graph(launch, stream.ptr), stream.ptr)
        def launch_and_wait() -> None:
            launch()
            stream.synchronize()

        torch = _torch_cuda()
        return _cuda_event_timed(launch, stream.ptr) if torch else HostOnly(launch_and_wait, NO_EVENTS)

    def deactivate(self) -> None:
        if self._runner is not None and self._runner.is_active:
            with engines.polygraphy_messages():
                self._runner.deactivate()
        self._runner = None


def _torch_cuda():
    """torch when it is installed with a usable CUDA device (for CUDA events and graphs), else None."""
    return torch_cuda()


def _cuda_event_timed(run: Callable[[], object], stream_ptr: int) -> Callable[[], Sample]:
    """Samples of `run` (host latency and GPU compute time) with CUDA events on the runner's own stream."""
    torch = require_torch_cuda("timing on the GPU (CUDA events)")
    return event_timed(run, torch.cuda.ExternalStream(stream_ptr), enter_stream=True)


def _captured_graph(launch: Callable[[], None], stream_ptr: int) -> Callable[[], None]:
    """A CUDA graph of one enqueue, captured on the runner's stream; returns its replay.  TensorRT
    wants one enqueue after any input-shape change before a capture: the warm-up enqueue."""
    torch = require_torch_cuda("cuda_graphs")
    return capture_graph(launch, torch.cuda.ExternalStream(stream_ptr), warmups=1)


def _output_dtypes(model: onnx.ModelProto) -> dict[str, np.dtype]:
    return {o.name: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type)) for o in model.graph.output}


class TensorRtBackend(Backend):
    name = "tensorrt"
    description = "NVIDIA TensorRT via Polygraphy (engine profiles, engine cache)"
    extra = "tensorrt"
    capabilities = Capabilities(device="cuda", dtypes=("float32", "float16", "bfloat16"),
                                precisions=("fp32", "tf32", "fp16", "bf16"), cuda_graphs=True)

    def probe(self) -> Availability:
        version, reason = engines.runtime_status()
        return Availability(reason is None, version, reason or "")

    @staticmethod
    def profile(config: BuildConfig) -> EngineProfile:
        return load_profile(chosen_profile(config.hint("profile")))

    def unsupported_reason(self, case: Case, config: BuildConfig) -> str | None:
        """The base checks, then what the engine profile and the model allow (a precision the
        profile leaves out, a dynamic axis it gives no range for, a profile for another GPU)."""
        reason = super().unsupported_reason(case, config)
        if reason:
            return reason
        try:
            profile = self.profile(config)
            engines.plan_engine(case.model, config.precision, profile, engines.tensorrt_version())
            return profile.gpu_mismatch(cuda_driver.visible_device().name)
        except (UsageError, cuda_driver.NoCudaDevice) as error:
            return str(error)

    def accumulation(self, dtype: str, config: BuildConfig = BuildConfig()) -> tuple[Accumulation, ...]:
        """Declared, not measured (no TensorRT run yet):
        - fp32: one float32 sum (TF32 is off); tf32: float32 sums of TF32-rounded operands.
        - fp16/bf16 on a float32 model: operands and result rounded to the narrow type, float32
          sums; plus one float32 sum, since the builder may keep a layer in float32.
        - float16/bfloat16 models (strongly typed): one float32 sum, plus one sum in the model's
          type, because TensorRT may pick a tactic that accumulates in it.  This widens the bound
          until a GPU run measures which TensorRT uses; `float32_sum_ratio` then shows it."""
        if dtype in ("float16", "bfloat16"):
            return (OneSum("float32"), OneSum(dtype))
        if dtype == "float32" and config.precision == "tf32":
            return (OneSum("float32", operands="tfloat32"),)
        if dtype == "float32" and config.precision in _NARROW:
            narrow = _NARROW[config.precision]
            return (OneSum("float32", operands=narrow, result=narrow), OneSum("float32"))
        return super().accumulation(dtype, config)

    def repro_recipe(self, spec, version: str | None) -> ReproRecipe:
        """Polygraphy's loaders (NVIDIA's own, shipped with TensorRT), with TF32 off as for fp32."""
        run = (
            "def run(model_path, feeds):  # a TensorRT engine built with TF32 off, run on the first GPU\n"
            "    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, TrtRunner\n"
            "    build = EngineFromNetwork(NetworkFromOnnxPath(model_path), config=CreateConfig(tf32=False))\n"
            "    with TrtRunner(build) as runner:\n"
            "        return next(iter(runner.infer(feeds).values()))\n"
        )
        return ReproRecipe("TensorRT", f"{pinned('tensorrt', version)} polygraphy", "tensorrt.__version__",
                           "import tensorrt", run)

    def load(self, case: Case, config: BuildConfig) -> TensorRtRunner:
        profile = self.profile(config)
        plan = engines.plan_engine(case.model, config.precision, profile, engines.tensorrt_version())
        loader = engines.engine_loader(case.model_bytes, plan, EngineCache())
        return TensorRtRunner(loader, _output_dtypes(case.model), profile.cuda_graphs)
