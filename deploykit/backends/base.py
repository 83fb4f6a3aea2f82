"""The contract every backend implements, after Polygraphy's runners and loaders.

A backend is a factory with facts about itself: whether it is available, what it can load
(`Capabilities`: ONNX files, single layers from a spec, torch modules; its device, dtypes and
build precisions), and how it sums (`accumulation`, measured per backend).  `load(case, config)`
composes a loader (model bytes + a frozen `BuildConfig` -> session or engine) with a runner, so a
build precision is a value passed in, never a global.  A runner is one prepared model with
`activate / infer / deactivate`: session or engine creation is never mixed with inference (and
never inside a timed region), and `infer(feeds)` returns every output by name, as Polygraphy's
runners do.  Nothing outside a backend's own module needs to know its name.

A build precision is a request, and a runtime may not honour it (OpenVINO's CPU plugin turns an f16
hint into bf16 on a CPU without float16 arithmetic).  After `activate()`, a runner that can tell
reports what the runtime applied through `applied_precision()` (see `AppliedPrecision`); the
execution path turns a precision that was not applied into `unsupported` with the runtime's own
evidence, so no result is ever a pass at a precision that did not run.  A runner that cannot tell
leaves the method out (or returns None) and its results stand as requested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

# Build precisions and model dtypes are part of the plugin API; they are defined with the shared vocabulary.
from deploykit.vocabulary import MODEL_DTYPES, PRECISIONS

if TYPE_CHECKING:
    from deploykit.backends.gpu_timing import Timed
    from deploykit.onnxio.write import Case
    from deploykit.op.bound import Accumulation
    from deploykit.op.spec import ConvTransposeSpec


@dataclass(frozen=True)
class Availability:
    available: bool
    version: str | None
    reason: str = ""


@dataclass(frozen=True)
class BuildConfig:
    """How a backend is asked to build a model: part of every result's identity.

    `hints` are engine-specific settings (e.g. a TensorRT builder optimisation level) as sorted
    (key, value) pairs, so the config stays hashable and prints the same everywhere.
    """

    precision: str = "fp32"
    threads: int | None = None
    hints: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        object.__setattr__(self, "hints", tuple(sorted(self.hints)))

    def hint(self, key: str, default: str | None = None) -> str | None:
        return dict(self.hints).get(key, default)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can take, declared once so no other module keeps lists of backend names."""

    device: str = "cpu"
    #: loads any ONNX model (a session or an engine built from the file)
    loads_onnx: bool = True
    #: runs one ConvTranspose from its spec (an ONNX file only when it is one such node)
    loads_spec: bool = False
    #: runs a PyTorch module itself (`deploykit export` compares the eager module too)
    loads_torch_module: bool = False
    dtypes: tuple[str, ...] = MODEL_DTYPES
    precisions: tuple[str, ...] = ("fp32",)
    #: an oracle to compare runtimes against (deploykit's reference, onnx.reference), not a
    #: deployment target: lint and export do not check it unless asked
    reference: bool = False
    #: a failure inside the runtime can abort the whole process (a Rust panic across the FFI):
    #: deploykit then runs it in a child process wherever it is not already isolated
    aborts_process: bool = False
    #: can replay a CUDA graph of one inference when timed with `--cuda-graph`
    cuda_graphs: bool = False
    #: part of `conformance run` without --backends (a CPU backend fast enough for the shipped
    #: matrices; a compiler that takes seconds per config says False and runs when named)
    in_default_run: bool = True


@dataclass(frozen=True)
class TensorMeta:
    """An input a runner expects: name, element type (NumPy dtype name) and shape (None: dynamic)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class ReproRecipe:
    """How a standalone script runs one case with the runtime's own public API (`deploykit repro`).

    `run` is the source of `def run(model_path: str, feeds: dict[str, np.ndarray]) -> np.ndarray`
    (the first output), using only NumPy, the standard library and what `pip` installs; it may
    read the folder's `W.npy`/`B.npy` through the global `HERE` (a `pathlib.Path`)."""

    runtime: str  # the name a maintainer knows, e.g. "onnxruntime"
    pip: str  # what to install besides numpy, pinned, e.g. "onnxruntime==1.31.1"
    version: str  # a Python expression for the runtime's version, evaluated after `imports`
    imports: str
    run: str
    #: `run` reads X, W and B from the folder's files itself (a torch call, not an ONNX session)
    reads_files: bool = False


@dataclass(frozen=True)
class AppliedPrecision:
    """What the runtime itself reports it applied for a build precision, read back after `activate()`.

    `precision` is a build precision name (PRECISIONS) when the runtime's answer maps to one, else
    the runtime's own word.  `evidence` says where it was read, in the runtime's terms, and what
    runs (e.g. "OpenVINO's compiled model reads back INFERENCE_PRECISION_HINT bf16"); `why`, when
    the runtime can tell, why the request was not honoured (e.g. the CPU lacks the arithmetic).
    A runtime's answer, never deploykit's guess: that is what makes it evidence for a verdict.
    """

    precision: str
    evidence: str
    why: str = ""


def precision_not_applied(requested: str, applied: AppliedPrecision | None) -> str | None:
    """The `unsupported` reason when the runtime reports another precision than `requested`, or
    None (applied, or the runner cannot tell).  The result keeps the requested precision as its
    identity; the reason says what ran instead."""
    if applied is None or applied.precision == requested:
        return None
    reason = f"{requested} not applied: {applied.evidence}"
    return f"{reason}; {applied.why}" if applied.why else reason


def read_applied_precision(runner: object) -> AppliedPrecision | None:
    """The runner's read-back, or None for a runner without one (the method is optional, so a
    backend written before it, or one whose runtime cannot tell, keeps working unchanged)."""
    read_back = getattr(runner, "applied_precision", None)
    return read_back() if callable(read_back) else None


class Runner(Protocol):
    def activate(self) -> None:
        """Build the session/engine. Raising here means the backend refused the model."""

    def input_metadata(self) -> list[TensorMeta]:
        """The inputs `infer` expects (after `activate`)."""

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; every output by name, as host NumPy arrays."""

    def iteration(self, feeds: dict[str, np.ndarray], include_transfers: bool = False) -> Timed:
        """Prepare for timing once (bind inputs and outputs on the device) and return a function
        that runs once and returns its latency in ms, or a `gpu_timing.Sample` (host latency and
        GPU compute time) on a GPU.  Host copies are inside the timed region only with
        `include_transfers`.  A backend whose capabilities say `cuda_graphs` also takes
        `cuda_graph=True`: each call then replays a CUDA graph of one inference."""

    def deactivate(self) -> None:
        """Free the session/engine."""


class ReadsBackPrecision(Protocol):
    """Optional for a runner (not every runtime can tell): `read_applied_precision` calls it when
    present and treats a runner without it as "cannot tell"."""

    def applied_precision(self) -> AppliedPrecision | None:
        """After `activate`: the precision the runtime reports it applied, read from the built
        session or engine, or None when it has no such answer.  It must not raise (a read-back that
        fails is None).  A precision other than the requested one makes the result `unsupported`."""


class Backend:
    """Base class with the defaults most backends want; override what differs."""

    name: str = ""
    description: str = ""
    #: pip extra that installs what this backend needs (shown when it is unavailable)
    extra: str | None = None
    capabilities: Capabilities = Capabilities()

    @property
    def device(self) -> str:
        return self.capabilities.device

    def probe(self) -> Availability:
        """Is the package importable and the hardware present?  Must not raise."""
        return Availability(True, None)

    def unsupported_reason(self, case: "Case", config: BuildConfig) -> str | None:
        """Why this backend cannot run `case` as asked (documented non-support), or None."""
        caps = self.capabilities
        if config.precision not in caps.precisions:
            return f"{self.name} has no {config.precision} build precision (it offers {', '.join(caps.precisions)})"
        if case.module is not None and caps.loads_torch_module:
            return None
        if case.spec is None and not caps.loads_onnx:
            nodes = len(case.model.graph.node)
            return f"{self.name} runs ONNX models only when they are one ConvTranspose node with constant weights; this one has {nodes} node(s)"
        if case.spec is not None and case.spec.dtype not in caps.dtypes:
            return f"{self.name} has no {case.spec.dtype} ConvTranspose kernel"
        return self.spec_limits(case) if case.spec is not None else None

    def spec_limits(self, case: "Case") -> str | None:
        """A documented limit for this config (e.g. padding torch cannot express), or None."""
        return None

    def accumulation(self, dtype: str, config: BuildConfig = BuildConfig()) -> tuple["Accumulation", ...]:
        """How the backend sums for `dtype` under `config`: the error bound is the largest over these.

        The default, one float32 sum rounded once for float16/bfloat16, is what ORT's MLAS and
        oneDNN were measured to do; a backend that differs must declare it, with a test that
        emulates its order (tests/op/test_accumulation.py).
        """
        from deploykit.op.bound import OneSum

        return (OneSum("float32" if dtype in ("float16", "bfloat16") else dtype),)

    def repro_recipe(self, spec: "ConvTransposeSpec", version: str | None) -> ReproRecipe | None:
        """How a script with no deploykit import runs `spec` on this runtime (at `version`, the one
        that produced the result), or None when there is no such script (deploykit's own reference)."""
        return None

    def load(self, case: "Case", config: BuildConfig) -> Runner:
        """A runner for `case` built under `config` (nothing is built until `activate`).

        A backend that `loads_torch_module` runs `case.module` when the case has one."""
        raise NotImplementedError


class CallableRunner:
    """A runner around a plain function, for backends with no session to build."""

    def __init__(self, function: Callable[[dict], dict], prepare: Callable[[], None] | None = None,
                 inputs: list[TensorMeta] | None = None) -> None:
        self._function = function
        self._prepare = prepare
        self._inputs = inputs or []

    def activate(self) -> None:
        if self._prepare is not None:
            self._prepare()

    def input_metadata(self) -> list[TensorMeta]:
        return list(self._inputs)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._function(feeds)

    def iteration(self, feeds: dict[str, np.ndarray], include_transfers: bool = False) -> Callable[[], float]:
        from deploykit.backends.timing import host_timed

        return host_timed(lambda: self._function(feeds))

    def deactivate(self) -> None:
        pass


def pinned(package: str, version: str | None) -> str:
    """`package==version` for a repro's install line (the leading release number only)."""
    import re

    match = re.match(r"\d+(\.\d+)*", version or "")
    return f"{package}=={match.group(0)}" if match else package


def case_inputs(case: "Case") -> list[TensorMeta]:
    """The inputs of a case's ONNX graph (what a spec-driven runner is fed)."""
    from deploykit.onnxio.read import ONNX_TO_DTYPE, graph_inputs
    from deploykit.onnxio.write import NUMPY_DTYPES

    metas = []
    for graph_input in graph_inputs(case.model):
        dtype = ONNX_TO_DTYPE.get(graph_input.elem_type)
        name = NUMPY_DTYPES[dtype].name if dtype else str(graph_input.elem_type)
        shape = tuple(d if isinstance(d, int) else None for d in graph_input.dims)
        metas.append(TensorMeta(graph_input.name, name, shape))
    return metas

