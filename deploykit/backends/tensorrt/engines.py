"""TensorRT engines through Polygraphy's loaders: the one build path of the `tensorrt` backend and
of `deploykit export --engine`.

deploykit decides *what* to build as plain values (`EnginePlan`: build precision -> builder flags,
strong typing for float16/bfloat16 models, the profile's optimisation level, workspace and input
shape ranges), and Polygraphy's TensorRT loaders (NetworkFromOnnxBytes, CreateConfig,
EngineBytesFromNetwork, EngineFromBytes) do the building, so TensorRT API differences between
versions are handled by NVIDIA's tested code.  `CachedEngineBytes` puts the engine cache
(deploykit/backends/tensorrt/cache.py) in front of the build; a cache hit and a fresh build are both
deserialized by EngineFromBytes.

None of this has run on real TensorRT: no machine deploykit is developed on has TensorRT or a GPU.
Everything that does not need TensorRT itself (plans, flags, keys, loader composition, error
capture) is unit-tested in tests/backends/test_tensorrt.py.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, cast

import onnx

from deploykit.backends.tensorrt import cuda_driver
from deploykit.backends.tensorrt.cache import BuildHost, EngineCache, engine_key, key_document, write_atomically
from deploykit.backends.tensorrt.profiles import EngineProfile
from deploykit.errors import UsageError
from deploykit.onnxio.read import ONNX_TO_DTYPE, graph_inputs

INSTALL = "pip install 'deploykit[tensorrt]'"
#: the oldest Polygraphy with everything used here (TrtRunner's return_raw_buffers, for bfloat16 outputs)
MIN_POLYGRAPHY = "0.49.18"
#: model dtypes that are built as strongly typed networks: TensorRT computes in the model's own types
STRONGLY_TYPED = ("float16", "bfloat16")
#: build precision -> CreateConfig's flags for a float32 model; TF32 is off unless asked for
#: (CreateConfig(tf32=False) clears the flag TensorRT sets by default), so fp32 is float32
PRECISION_FLAGS: dict[str, dict[str, bool]] = {
    "fp32": {"tf32": False, "fp16": False, "bf16": False},
    "tf32": {"tf32": True, "fp16": False, "bf16": False},
    "fp16": {"tf32": False, "fp16": True, "bf16": False},
    "bf16": {"tf32": False, "fp16": False, "bf16": True},
}
#: the precision that names a strongly typed model's own type (it builds the same engine as fp32)
_OWN_PRECISION = {"float16": "fp16", "bfloat16": "bf16"}


class EngineRefused(RuntimeError):
    """TensorRT's parser or builder refused the model; the message is TensorRT's own."""


@dataclass(frozen=True)
class EnginePlan:
    """Everything that decides the engine TensorRT builds, as plain values (and so the cache key)."""

    profile: str
    precision: str
    strongly_typed: bool
    tf32: bool
    fp16: bool
    bf16: bool
    builder_optimization_level: int | None
    workspace_bytes: int | None
    #: (input, min, opt, max) for every input with a dynamic axis
    shapes: tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...] = ()

    def create_config_kwargs(self) -> dict:
        return {"tf32": self.tf32, "fp16": self.fp16, "bf16": self.bf16,
                "builder_optimization_level": self.builder_optimization_level}


def model_dtype(model: onnx.ModelProto) -> str:
    """The floating type of the model's inputs (float32 when it has none)."""
    types = [ONNX_TO_DTYPE.get(i.elem_type) for i in graph_inputs(model)]
    return next((t for t in types if t), "float32")


def tensorrt_version() -> str | None:
    """The importable TensorRT's version, or None."""
    try:
        return str(importlib.import_module("tensorrt").__version__)
    except Exception:  # noqa: BLE001 - absent or broken: the probe says which
        return None


def _major(version: str | None) -> int | None:
    head = (version or "").split(".")[0]
    return int(head) if head.isdigit() else None


def precision_problem(precision: str, dtype: str, profile: EngineProfile, tensorrt: str | None = None) -> str | None:
    """Why `precision` cannot be built for a `dtype` model under `profile` (with TensorRT version
    `tensorrt`, when known), or None."""
    if precision not in profile.precisions:
        return f"engine profile {profile.name} has no {precision} build precision (it offers {', '.join(profile.precisions)})"
    if dtype == "float64":
        return "TensorRT has no float64 tensors"
    if dtype in STRONGLY_TYPED and precision in ("fp16", "bf16") and precision != _OWN_PRECISION[dtype]:
        return f"a {dtype} model is built strongly typed and computes in {dtype}; {precision} does not apply"
    if dtype == "float32" and precision in _OWN_PRECISION.values() and (_major(tensorrt) or 0) >= 11:
        # TensorRT 11 removed weakly typed networks and the FP16/BF16 builder flags
        return (f"TensorRT {tensorrt} builds strongly typed networks only: a float32 model runs in float32 "
                f"(export it in the narrow type instead of {precision})")
    return None


def create_config_flags(precision: str, dtype: str) -> dict[str, bool]:
    """CreateConfig's precision flags.  A strongly typed network takes its types from the model, so
    the FP16/BF16 flags (which let TensorRT lower float32 layers) are never set for one; only TF32,
    which concerns float32 layers alone, is passed on."""
    if dtype in STRONGLY_TYPED:
        return {**PRECISION_FLAGS["fp32"], "tf32": precision == "tf32"}
    return dict(PRECISION_FLAGS[precision])


def optimisation_shapes(model: onnx.ModelProto, profile: EngineProfile):
    """(input, min, opt, max) for each input with a dynamic axis, from the profile: its named
    `shapes.inputs`, else its `shapes.batch` range where only the first axis is dynamic.  Inputs
    with static shapes need no range (a named one would contradict them), so they get none."""
    shapes = []
    for graph_input in graph_inputs(model):
        dynamic = [axis for axis, dim in enumerate(graph_input.dims) if not isinstance(dim, int)]
        if not dynamic:
            continue
        named = profile.shapes.inputs.get(graph_input.name)
        if named is not None:
            if len(named.min) != len(graph_input.dims):
                raise UsageError(f"engine profile {profile.name}: shapes.inputs.{graph_input.name} has rank "
                                 f"{len(named.min)}, the model's input has rank {len(graph_input.dims)}")
            shapes.append((graph_input.name, named.min, named.opt, named.max))
        elif dynamic == [0] and profile.shapes.batch is not None:
            # only axis 0 is dynamic here, so every other dim is a fixed int
            rest, batch = tuple(d for d in graph_input.dims[1:] if isinstance(d, int)), profile.shapes.batch
            shapes.append((graph_input.name, (batch.min, *rest), (batch.opt, *rest), (batch.max, *rest)))
        else:
            raise UsageError(f"input {graph_input.name} has dynamic axes {dynamic}; engine profile {profile.name} gives "
                             f"no shape range for it (add shapes.inputs.{graph_input.name}: {{min, opt, max}})")
    return tuple(shapes)


def plan_engine(model: onnx.ModelProto, precision: str, profile: EngineProfile, tensorrt: str | None = None) -> EnginePlan:
    """The plan for `model` at `precision` under `profile` (with TensorRT version `tensorrt`, when
    known); what cannot be built is a UsageError."""
    dtype = model_dtype(model)
    problem = precision_problem(precision, dtype, profile, tensorrt)
    if problem:
        raise UsageError(problem)
    flags = create_config_flags(precision, dtype)
    return EnginePlan(profile.name, precision, dtype in STRONGLY_TYPED, flags["tf32"], flags["fp16"], flags["bf16"],
                      profile.builder_optimization_level,
                      cast("int | None", profile.workspace),  # bytes: the profile's validator (_size) reads "8G" as them
                      optimisation_shapes(model, profile))


# --- Polygraphy: quiet, with TensorRT's messages kept for the refusal ---------------------------


class _Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


@contextlib.contextmanager
def polygraphy_messages() -> Iterator[None]:
    """Polygraphy prints to stdout and raises with a generic message ("Could not parse ONNX
    correctly") after logging TensorRT's parser and builder errors.  Within this block its output
    is collected instead of printed, and a PolygraphyException becomes an EngineRefused whose
    message is TensorRT's errors followed by Polygraphy's."""
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    collected, python_logger = _Collected(), logging.getLogger("Polygraphy")
    saved = (G_LOGGER.colors, G_LOGGER.letter, G_LOGGER.module_severity, G_LOGGER.use_python_logging_system, python_logger.propagate)
    G_LOGGER.colors, G_LOGGER.letter, G_LOGGER.module_severity = False, False, G_LOGGER.ERROR
    G_LOGGER.use_python_logging_system, python_logger.propagate = True, False
    python_logger.addHandler(collected)
    try:
        yield
    except PolygraphyException as error:
        final = " ".join(str(error).split())
        details = [m for m in collected.messages if m != final]
        raise EngineRefused("; ".join([*details, final]) if details else final) from None
    finally:
        python_logger.removeHandler(collected)
        G_LOGGER.colors, G_LOGGER.letter, G_LOGGER.module_severity = saved[:3]
        G_LOGGER.use_python_logging_system, python_logger.propagate = saved[3:]


@dataclass(frozen=True)
class WorkspaceLimit:
    """PostprocessConfig's function: TensorRT's workspace pool limit, set when the config is built
    (the pool's enum lives in tensorrt, which must not be imported before then)."""

    bytes: int

    def __call__(self, builder, network, config) -> None:
        import tensorrt as trt

        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.bytes)


def network_loader(model_bytes: bytes, plan: EnginePlan):
    from polygraphy.backend.trt import NetworkFromOnnxBytes

    return NetworkFromOnnxBytes(model_bytes, strongly_typed=plan.strongly_typed)


def config_loader(plan: EnginePlan, timing_cache: str | None = None):
    from polygraphy.backend.trt import CreateConfig, PostprocessConfig, Profile

    profiles = None
    if plan.shapes:
        profile = Profile()
        for name, smallest, optimal, largest in plan.shapes:
            profile.add(name, min=smallest, opt=optimal, max=largest)
        profiles = [profile]
    with polygraphy_messages():  # CreateConfig logs advice ("TF32 is disabled by default") when made
        config = CreateConfig(**plan.create_config_kwargs(), profiles=profiles, load_timing_cache=timing_cache)
    return PostprocessConfig(config, WorkspaceLimit(plan.workspace_bytes)) if plan.workspace_bytes else config


def build_loader(model_bytes: bytes, plan: EnginePlan, timing_cache: str | None = None):
    """Polygraphy's loader chain that parses and builds: called, it returns the serialized engine."""
    from polygraphy.backend.trt import EngineBytesFromNetwork

    return EngineBytesFromNetwork(network_loader(model_bytes, plan), config=config_loader(plan, timing_cache),
                                  save_timing_cache=timing_cache)


def build_host() -> BuildHost:
    """The TensorRT, Polygraphy and GPU an engine is built with here (part of its cache key)."""
    import polygraphy
    import tensorrt as trt

    device = cuda_driver.visible_device()
    return BuildHost(trt.__version__, polygraphy.__version__, device.name, device.compute_capability)


class CachedEngineBytes:
    """A loader (called: the serialized engine) that reuses a cached engine or builds and stores one."""

    def __init__(self, model_bytes: bytes, plan: EnginePlan, cache: EngineCache | None) -> None:
        self.model_bytes, self.plan, self.cache = model_bytes, plan, cache
        self.hit: bool | None = None
        self.path: Path | None = None

    def __call__(self) -> bytes:
        host = build_host()
        build = asdict(self.plan)
        key = engine_key(self.model_bytes, build, host)
        if self.cache is not None:
            cached = self.cache.load(key)
            if cached is not None:
                self.hit, self.path = True, self.cache.engine_path(key)
                return cached
        timing_cache = str(self.cache.timing_cache_path(host)) if self.cache is not None else None
        if timing_cache:
            Path(timing_cache).parent.mkdir(parents=True, exist_ok=True)
        engine = bytes(build_loader(self.model_bytes, self.plan, timing_cache)())
        self.hit = False
        if self.cache is not None:
            self.path = self.cache.store(key, engine, key_document(self.model_bytes, build, host))
        return engine


def engine_loader(model_bytes: bytes, plan: EnginePlan, cache: EngineCache | None):
    """Polygraphy's EngineFromBytes over the cache: called, it returns a deserialized engine."""
    from polygraphy.backend.trt import EngineFromBytes

    return EngineFromBytes(CachedEngineBytes(model_bytes, plan, cache))


def runtime_status() -> tuple[str | None, str | None]:
    """(TensorRT version, None) when engines can be built and run here, else (version, why not)."""
    from packaging.version import Version

    try:
        trt = importlib.import_module("tensorrt")
    except Exception as error:  # noqa: BLE001 - a broken install raises more than ImportError
        return None, f"needs the 'tensorrt' package ({error}); install it with: {INSTALL}"
    version = str(getattr(trt, "__version__", "unknown"))
    try:
        polygraphy = importlib.import_module("polygraphy")
    except Exception as error:  # noqa: BLE001
        return version, f"needs the 'polygraphy' package ({error}); install it with: {INSTALL}"
    if Version(polygraphy.__version__) < Version(MIN_POLYGRAPHY):
        return version, f"polygraphy {polygraphy.__version__} is older than {MIN_POLYGRAPHY}; install a newer one with: {INSTALL}"
    missing = cuda_driver.missing_reason()
    if missing:
        return version, f"TensorRT {version} is installed but no NVIDIA GPU is visible: {missing}"
    return version, None


def availability() -> str | None:
    """None when an engine can be built here, else the one-line reason."""
    return runtime_status()[1]


def check_profile_fits_gpu(profile: EngineProfile) -> None:
    mismatch = profile.gpu_mismatch(cuda_driver.visible_device().name)
    if mismatch:
        raise UsageError(f"{mismatch}; choose a profile for it or `default`")


def export_engine(model_bytes: bytes, output: Path, precision: str, profile: EngineProfile,
                  cache: EngineCache | None = None) -> CachedEngineBytes:
    """Build (or reuse) the engine for an exported model and write it to `output` atomically.

    The same loaders as the `tensorrt` backend: the engine is deserialized by EngineFromBytes before
    it is written, so a file that TensorRT cannot load is never left behind.  Raises EngineRefused
    with TensorRT's message when it refuses the model."""
    from polygraphy.backend.trt import EngineFromBytes

    check_profile_fits_gpu(profile)
    plan = plan_engine(onnx.load_from_string(model_bytes), precision, profile, tensorrt_version())
    built = CachedEngineBytes(model_bytes, plan, cache if cache is not None else EngineCache())
    with polygraphy_messages():
        engine = built()
        EngineFromBytes(engine)()
    try:
        write_atomically(output, engine)
    except OSError as error:
        raise UsageError(f"--engine {output}: cannot write ({error.strerror})") from None
    return built


def checked_export_profile(profile_name: str, precision: str, dtype: str) -> EngineProfile:
    """The engine profile for `deploykit export --engine`, checked before any work: a bad profile, a precision it
    leaves out, or no TensorRT/GPU here is one line, not a failure after the export."""
    from deploykit.backends.tensorrt.profiles import load_profile

    profile = load_profile(profile_name)
    problem = precision_problem(precision, dtype, profile)
    if problem:
        raise UsageError(f"--engine-precision {precision}: {problem}")
    reason = availability()
    if reason:
        raise UsageError(f"--engine: cannot build a TensorRT engine here: {reason}")
    problem = precision_problem(precision, dtype, profile, tensorrt_version())
    if problem:  # what this TensorRT version cannot build
        raise UsageError(f"--engine-precision {precision}: {problem}")
    check_profile_fits_gpu(profile)
    return profile
