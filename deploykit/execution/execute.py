"""The one execution path every command takes: probe -> load -> activate -> infer -> judge.

`run_backend(backend, case, config)` is the only place a backend's runner is built, activated,
run, timed and freed, and the only place a refusal becomes `rejected` or a documented limit
`unsupported`, as does a build precision the runtime reports it did not apply (read back after
`activate()`, before anything runs: no output is judged at a precision that did not run).
Conformance (`Executor`, inside the harness's workers), `profile` and `export`
all call it; they differ only in what they compare the outputs with.
Data flows one way: spec -> case (model + inputs) -> backend (with a build config) -> outputs ->
verdict against the float64 reference.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from deploykit import backends as registry
from deploykit.backends.base import Availability, Backend, BuildConfig, precision_not_applied, read_applied_precision
from deploykit.backends.timing import TimingOptions, measure, timed_ms
from deploykit.execution.isolation import isolated, run_isolated
from deploykit.execution.outcome import Outcome, one_line
from deploykit.onnxio.write import Case, build_case, inferred_output_shape
from deploykit.op.bound import describe
from deploykit.op.judging import Tolerance, judge_output
from deploykit.op.reference import ExactAnswer
from deploykit.op.spec import ConvTransposeSpec
from deploykit.results import divergences
from deploykit.results.result import Result


def skip_reason(backend: Backend, availability: Availability, case: Case, config: BuildConfig) -> tuple[Literal["unavailable", "unsupported"], str] | None:
    """(`unavailable` | `unsupported`, why) when the backend should not even be tried."""
    if not availability.available:
        return "unavailable", availability.reason
    unsupported = backend.unsupported_reason(case, config)
    return ("unsupported", unsupported) if unsupported else None


def no_cuda_graph_reason(backend: Backend) -> str:
    """Why `--cuda-graph` cannot time this backend (one line), naming the backends that can."""
    where = "runs on the CPU" if backend.device == "cpu" else "has no CUDA-graph replay"
    capable = []
    for name in registry.names():
        try:
            if registry.get(name).capabilities.cuda_graphs:
                capable.append(name)
        except Exception:  # noqa: BLE001 - a broken plugin: `deploykit backends` says why
            continue
    return f"{backend.name} {where}: --cuda-graph applies to {', '.join(capable) or 'no registered backend'}"


def _activate_and_infer(runner, case: Case, config: BuildConfig, timing: TimingOptions | None, outcome: Outcome,
                        graphs: str | None = None) -> None:
    """`graphs`: why this backend cannot replay a CUDA graph (None: it can), for `timing.cuda_graph`."""
    _, outcome.setup_ms = timed_ms(runner.activate)
    not_applied = precision_not_applied(config.precision, read_applied_precision(runner))
    if not_applied:
        outcome.status, outcome.reason = "unsupported", not_applied
        return
    outcome.outputs = {name: np.asarray(value) for name, value in runner.infer(case.feeds).items()}
    outcome.status = "ok"
    if timing is None:
        return
    if timing.cuda_graph and graphs:
        outcome.timing_problem = f"latency not measured: {graphs}"
        return
    try:
        extra = {"cuda_graph": True} if timing.cuda_graph else {}  # runners without graphs never see the keyword
        outcome.stats = measure(runner.iteration(case.feeds, timing.include_transfers, **extra), timing)
    except Exception as error:  # noqa: BLE001 - timing must not change the verdict
        outcome.timing_problem = f"latency not measured: {one_line(error)}"


def run_backend(
    backend: Backend,
    availability: Availability,
    case: Case,
    config: BuildConfig,
    timing: TimingOptions | None = None,
    phase: Callable[[str], object] = lambda name: None,
) -> Outcome:
    """Build, run once (and time when asked), free.  Any exception from the runtime is `rejected`.

    `phase` is told "backend" when the backend's own work begins and "judging" when it ends: that
    span alone is `duration_ms`, and what a worker's timeout counts.
    """
    skipped = skip_reason(backend, availability, case, config)
    if skipped:
        return Outcome(*skipped)
    if backend.capabilities.aborts_process and not isolated():
        phase("backend")
        try:
            return run_isolated(backend.name, availability, case, config, timing)
        finally:
            phase("judging")
    outcome = Outcome("rejected")
    phase("backend")
    started = time.perf_counter()
    runner = backend.load(case, config)
    try:
        try:
            graphs = None if backend.capabilities.cuda_graphs else no_cuda_graph_reason(backend)
            _activate_and_infer(runner, case, config, timing, outcome, graphs)
        finally:
            runner.deactivate()
    except Exception as error:  # noqa: BLE001 - any refusal is a finding, not a deploykit crash
        outcome.status, outcome.reason, outcome.outputs = "rejected", one_line(error), {}
    finally:
        outcome.duration_ms = (time.perf_counter() - started) * 1e3
        phase("judging")
    return outcome


@dataclass
class Prepared:
    """A config's case and, computed only when a backend runs it, its float64 answer."""

    case: Case
    inferred_shape: tuple[int | None, ...] | None
    _exact: ExactAnswer | None = None

    def exact(self) -> ExactAnswer | None:
        """deploykit's own work: None for a spec-invalid config, which has no right answer."""
        spec = self.case.require_spec()
        if self._exact is None and spec.is_valid:
            self._exact = ExactAnswer(spec, self.case.x, self.case.require_weights(), self.case.b)
        return self._exact


class Executor:
    """Conformance in one process: caches backends, their availability and prepared cases
    across the tasks of one worker, and turns each Outcome into a judged Result."""

    def __init__(
        self,
        tolerance: Tolerance | None = None,
        threads: int | None = None,
        known: list[divergences.Divergence] | None = None,
        cache_size: int = 8,
        latency: dict | None = None,
    ) -> None:
        self.tolerance = tolerance
        self.timing = None if latency is None else TimingOptions(**latency)  # None: no timing
        self.threads = threads
        self.known = divergences.load() if known is None else known
        self._backends: dict[str, tuple[Backend, Availability]] = {}
        self._cases: OrderedDict[str, Prepared] = OrderedDict()
        self._cache_size = cache_size

    def loaded(self) -> list[str]:
        """The backends this executor has loaded and probed."""
        return list(self._backends)

    def backend(self, name: str) -> tuple[Backend, Availability]:
        if name not in self._backends:
            backend = registry.get(name)
            self._backends[name] = (backend, backend.probe())
        return self._backends[name]

    def prepare(self, spec: ConvTransposeSpec) -> Prepared:
        key = f"{spec.id}:{spec.expect}"
        if key in self._cases:
            self._cases.move_to_end(key)
            return self._cases[key]
        case = build_case(spec)
        prepared = Prepared(case, inferred_output_shape(case.model))
        self._cases[key] = prepared
        if len(self._cases) > self._cache_size:
            self._cases.popitem(last=False)
        return prepared

    def run(
        self,
        spec: ConvTransposeSpec,
        backend_name: str,
        phase: Callable[[str], object] = lambda name: None,
        precision: str = "fp32",
    ) -> Result:
        """One judged (config, backend, precision) result.  deploykit's own preparation (the
        float64 reference) comes before the backend's phase and may raise."""
        result = Result.for_spec(spec, backend_name, precision=precision)
        backend, availability = self.backend(backend_name)
        result.backend_version = availability.version
        config = BuildConfig(precision=precision, threads=self.threads)
        prepared = self.prepare(spec)
        skipped = skip_reason(backend, availability, prepared.case, config)
        if skipped:
            result.verdict, result.reason = skipped
        else:
            exact = prepared.exact()
            outcome = run_backend(backend, availability, prepared.case, config, self._timing(spec), phase)
            self._judge(backend, prepared, exact, config, outcome, result)
        self._mark_known(result, spec, precision)
        return result

    def judge_outcome(self, spec: ConvTransposeSpec, backend_name: str, outcome: Outcome, precision: str = "fp32",
                      version: str | None = None) -> Result:
        """A verdict on what a backend produced elsewhere (`conformance judge`): the judging and
        known-divergence matching of `run`, with the backend's phase replaced by its answer."""
        result = Result.for_spec(spec, backend_name, precision=precision)
        result.backend_version = version
        prepared = self.prepare(spec)
        exact = prepared.exact() if outcome.status == "ok" else None
        self._judge(registry.get(backend_name), prepared, exact, BuildConfig(precision=precision), outcome, result)
        self._mark_known(result, spec, precision)
        return result

    def _mark_known(self, result: Result, spec: ConvTransposeSpec, precision: str) -> None:
        if result.verdict != "pass":
            known = divergences.match(self.known, spec, result.backend, result.verdict, precision, result.backend_version)
            result.known_divergence = known.id if known else None

    def _timing(self, spec: ConvTransposeSpec) -> TimingOptions | None:
        return self.timing if spec.expect == "accept" else None

    def _judge(self, backend: Backend, prepared: Prepared, exact: ExactAnswer | None, config: BuildConfig,
               outcome: Outcome, result: Result) -> None:
        spec = prepared.case.require_spec()
        result.duration_ms = outcome.duration_ms
        if prepared.inferred_shape is not None:
            result.onnx_inferred_shape = list(prepared.inferred_shape)
        if outcome.status != "ok":
            if spec.expect == "reject" and outcome.status != "unsupported":
                result.reason = f"refused the spec-invalid model: {outcome.reason}"
            else:
                result.verdict, result.reason = outcome.status, outcome.reason
            return
        [output] = outcome.outputs.values()
        result.actual_shape = list(output.shape)
        if spec.expect == "reject":
            result.verdict = "accepted-invalid"
            result.reason = f"ran it (output {list(output.shape)}) although {'; '.join(spec.violations())}"
            return
        self._record_latency(outcome, result, spec)
        assert exact is not None, "an accepted config is spec-valid (conformance.matrix checks), so it has an answer"
        models = backend.accumulation(spec.dtype, config)
        judgement = judge_output(spec, output, exact, models, self.tolerance, outcome.reading_error)
        result.verdict, result.reason = judgement.verdict, judgement.reason
        result.accumulation = describe(models)
        if outcome.reading:
            result.accumulation = f"{result.accumulation}; {outcome.reading}"
            if judgement.verdict == "drift":
                result.reason = f"{result.reason}; {outcome.reading}"
        result.float32_sum_ratio = judgement.float32_sum_ratio
        if outcome.timing_problem:
            result.reason = f"{result.reason}; {outcome.timing_problem}" if result.reason else outcome.timing_problem
        if judgement.drift is not None:
            for name in ("max_abs_err", "max_rel_err", "rel_l2_err", "max_ulp_err", "bound_ratio"):
                setattr(result, name, getattr(judgement.drift, name))

    @staticmethod
    def _record_latency(outcome: Outcome, result: Result, spec: ConvTransposeSpec) -> None:
        if outcome.stats is None:
            return
        result.latency_median_ms = outcome.stats.median_ms
        result.latency_p99_ms = outcome.stats.p99_ms
        result.latency_cv = outcome.stats.cv
        if outcome.stats.gpu is not None:
            result.latency_gpu_median_ms = outcome.stats.gpu.median_ms
            result.latency_gpu_p99_ms = outcome.stats.gpu.p99_ms
        result.gflops = outcome.stats.compute_gflops(spec.flops)
        result.setup_ms = outcome.setup_ms
