"""`deploykit profile`: the same timing method for every backend on one model or matrix config.

Each backend prepares once (session, engine, device tensors; reported as `setup_ms`), checks the
model runs, then the timing engine samples it.  Runs in this process: profiling wants a quiet,
single-tenant process, not the conformance harness's parallel workers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from onnx import helper

from deploykit import backends as registry
from deploykit.backends.base import BuildConfig
from deploykit.backends.timing import Stats, TimingOptions
from deploykit.conformance.matrix import load as load_matrix
from deploykit.errors import UsageError
from deploykit.execution import resources
from deploykit.execution.execute import no_cuda_graph_reason, run_backend
from deploykit.onnxio.read import case_from_model, conv_transpose_nodes, graph_inputs, load_model, resolve_shapes
from deploykit.onnxio.write import Case, build_case
from deploykit.op.spec import ConvTransposeSpec
from deploykit.results import environment


@dataclass
class ProfileRow:
    backend: str
    batch: int
    status: str  # ok | unsupported | unavailable | rejected | crash | timeout
    reason: str = ""
    backend_version: str | None = None
    precision: str = "fp32"
    min_ms: float | None = None
    median_ms: float | None = None
    mean_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    cv: float | None = None
    samples: int | None = None
    warmup_runs: int | None = None
    throughput_per_s: float | None = None
    gflops: float | None = None
    setup_ms: float | None = None
    threads: int | None = None
    warnings: list[str] = field(default_factory=list)
    #: plain (one inference per sample) or cuda-graph (one replay of a captured CUDA graph)
    timing_mode: str = "plain"
    #: GPU backends: GPU compute time of the same samples (CUDA events around the work: min_ms ...
    #: cv, samples); the *_ms fields above are then the host latency of the whole call.
    gpu_compute: dict | None = None
    #: why a GPU backend has no GPU compute figure (host latency only)
    gpu_compute_note: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Target:
    """What to profile at one batch size: a runnable case and its ConvTranspose FLOPs."""

    case: Case
    flops: int
    batch: int


#: Row statuses that are no finding: the backend ran, or says it cannot run this model or machine.
NOT_FINDINGS = ("ok", "unsupported", "unavailable")


def failing_rows(rows: list[ProfileRow]) -> list[ProfileRow]:
    """Rows where a backend rejected or crashed on the model (exit 1), as in every deploykit command."""
    return [row for row in rows if row.status not in NOT_FINDINGS]


def matrix_spec(matrix: str, config: str) -> ConvTransposeSpec:
    """A matrix config by label or id (or an unambiguous id prefix)."""
    specs = load_matrix(matrix).specs
    found = [s for s in specs if config in (s.label, s.id)] or [s for s in specs if s.id.startswith(config)]
    if len(found) != 1:
        hint = "no config" if not found else f"{len(found)} configs"
        raise UsageError(f"{hint} in matrix {matrix} match {config!r}; use a label or id from `deploykit generate`")
    return found[0]


def targets_for_model(path: Path, shapes: dict[str, tuple[int, ...]], batches: list[int] | None,
                      budget: int | None = None) -> list[Target]:
    model = load_model(path)
    targets = []
    chosen: list[int | None] = list(batches) if batches else [None]  # None: the model's own batch
    for batch in chosen:
        concrete = resolve_shapes(model, shapes, batch)
        _check_model_budget(model, path, concrete, budget or resources.default_budget())
        case, flops = case_from_model(model, concrete)
        first = next(iter(concrete.values()), (1,))
        targets.append(Target(case, flops, batch if batch is not None else (first[0] if first else 1)))
    return targets


def _check_model_budget(model, path: Path, shapes: dict[str, tuple[int, ...]], budget: int) -> None:
    """The model's inputs and its ConvTranspose nodes (as resources estimates a config) within the
    budget, before any array is drawn: a model declaring huge inputs is a usage error naming them,
    never an out-of-memory line after the allocation failed."""
    need = 0
    for graph_input in graph_inputs(model):
        try:
            item = helper.tensor_dtype_to_np_dtype(graph_input.elem_type).itemsize
        except (KeyError, TypeError, ValueError):
            item = 8
        need += math.prod(shapes.get(graph_input.name, ())) * item
    need += sum(resources.config_bytes(node.spec) for node in conv_transpose_nodes(model, shapes) if node.spec is not None)
    if need > budget:
        sizes = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in shapes.items())
        raise UsageError(f"model {path} at input shape(s) {sizes} needs about {resources.human(need)}, over the"
                         f" {resources.human(budget)} budget; give smaller --shape or --batch, or raise --max-memory")


def targets_for_spec(spec: ConvTransposeSpec, batches: list[int] | None, budget: int | None = None) -> list[Target]:
    targets = []
    for batch in batches or [spec.batch]:
        sized = spec.replace(input_shape=(batch, *spec.input_shape[1:]))
        resources.check_budget([sized], budget or resources.default_budget())
        targets.append(Target(build_case(sized), sized.flops, batch))
    return targets


def profile(
    targets: list[Target],
    backend_names: list[str],
    options: TimingOptions,
    threads: int | None = None,
    precision: str = "fp32",
) -> list[ProfileRow]:
    """Every (backend, batch) on the one execution path, with timing on; one row each."""
    config = BuildConfig(precision=precision, threads=threads)
    rows = []
    for name in backend_names:
        backend = registry.get(name)
        availability = backend.probe()
        for target in targets:
            row = ProfileRow(backend=name, batch=target.batch, status="ok", backend_version=availability.version,
                             threads=threads, precision=precision, timing_mode=options.mode)
            rows.append(row)
            if options.cuda_graph and not backend.capabilities.cuda_graphs:
                row.status, row.reason = "unsupported", no_cuda_graph_reason(backend)
                continue
            outcome = run_backend(backend, availability, target.case, config, options)
            if outcome.status == "ok" and outcome.stats is None:
                outcome.status, outcome.reason = "rejected", outcome.timing_problem or "no timing samples"
            if outcome.status != "ok" or outcome.stats is None:  # no stats: made "rejected" just above
                row.status, row.reason = outcome.status, outcome.reason
                continue
            _fill_figures(row, outcome.stats, target)
            row.setup_ms = outcome.setup_ms
    return rows


def _fill_figures(row: ProfileRow, stats: Stats, target: Target) -> None:
    """Host latency into the row's own fields, GPU compute time (when measured) beside it.
    Throughput is what a caller gets (host latency); GFLOP/s is the work's own rate (GPU compute
    time where there is one)."""
    for key, value in stats.as_dict().items():
        if key not in ("gpu", "gpu_note"):
            setattr(row, key, value)
    row.gpu_compute = stats.gpu.figures() if stats.gpu is not None else None
    row.gpu_compute_note = stats.gpu_note
    row.throughput_per_s = stats.throughput_per_s(target.batch)
    row.gflops = stats.compute_gflops(target.flops) if target.flops else None


def report(rows: list[ProfileRow], options: TimingOptions, source: str) -> dict:
    return {
        "source": source,
        "timing": options.as_dict(),
        "environment": environment.collect(),
        "results": [row.as_dict() for row in rows],
    }
