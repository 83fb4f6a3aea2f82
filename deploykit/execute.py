"""Run one (config, backend) pair in this process and judge it.

The harness calls this inside isolated workers; tests and `deploykit export` call it directly.
Data flows one way: spec -> case (model + inputs) -> backend output -> metrics vs reference.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from deploykit import backends as registry
from deploykit import divergences
from deploykit.backends.base import Availability, Backend
from deploykit.bound import describe
from deploykit.metrics import Tolerance, judge_output
from deploykit.onnxgen import Case, build_case, inferred_output_shape
from deploykit.reference import ExactAnswer
from deploykit.spec import ConvTransposeSpec
from deploykit.timing import TimingOptions, measure, timed_ms


@dataclass
class Result:
    """One row of the results store; the JSON report is a list of these."""

    config_id: str
    label: str
    backend: str
    dtype: str
    verdict: str
    reason: str = ""
    known_divergence: str | None = None
    expect: str = "accept"
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    rel_l2_err: float | None = None
    max_ulp_err: int | None = None
    bound_ratio: float | None = None
    #: the summation model(s) the bound allowed, e.g. "one float32 sum"
    accumulation: str | None = None
    #: bound_ratio under one float32 sum; only for models that sum in float16/bfloat16, where a
    #: value above 1 shows the backend really did (within its model: a fact, not a defect)
    float32_sum_ratio: float | None = None
    expected_shape: list[int] | None = None
    actual_shape: list[int] | None = None
    onnx_inferred_shape: list[int | None] | None = None
    backend_version: str | None = None
    duration_ms: float | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    # Latency figures (filled only when a run asks for --latency).
    latency_median_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_cv: float | None = None
    gflops: float | None = None
    setup_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def for_spec(cls, spec: ConvTransposeSpec, backend: str, verdict: str = "pass", reason: str = "") -> "Result":
        """A row with the config's identity filled in; the figures come later."""
        return cls(
            config_id=spec.id,
            label=spec.label,
            backend=backend,
            dtype=spec.dtype,
            verdict=verdict,
            reason=reason,
            expect=spec.expect,
            spec=spec.to_dict(),
            expected_shape=list(spec.output_full_shape) if spec.is_valid else None,
        )


@dataclass
class Prepared:
    case: Case
    exact: ExactAnswer | None  # None for a spec-invalid config: no right answer exists
    inferred_shape: tuple[int | None, ...] | None


_ONNXRUNTIME_NOISE = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")


def one_line(error: BaseException, limit: int = 240) -> str:
    """The informative part of an exception message, on one line."""
    text = str(error) or type(error).__name__
    if "Status Message: " in text:
        text = text.split("Status Message: ", 1)[1]
    text = _ONNXRUNTIME_NOISE.sub("", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Executor:
    """Caches backends, their availability and prepared cases across the tasks of one worker."""

    def __init__(
        self,
        tolerance: Tolerance | None = None,
        threads: int | None = None,
        known: list[divergences.Divergence] | None = None,
        cache_size: int = 8,
        latency: dict | None = None,
        precision: str = "fp32",
    ) -> None:
        self.tolerance = tolerance
        self.timing = None if latency is None else TimingOptions(**latency)  # None: no timing
        self.precision = precision
        self.threads = threads
        self.known = divergences.load() if known is None else known
        self._backends: dict[str, tuple[Backend, Availability]] = {}
        self._cases: OrderedDict[str, Prepared] = OrderedDict()
        self._cache_size = cache_size

    def backend(self, name: str) -> tuple[Backend, Availability]:
        if name not in self._backends:
            backend = registry.get(name)
            backend.precision = self.precision
            self._backends[name] = (backend, backend.probe())
        return self._backends[name]

    def prepare(self, spec: ConvTransposeSpec) -> Prepared:
        key = f"{spec.id}:{spec.expect}"
        if key in self._cases:
            self._cases.move_to_end(key)
            return self._cases[key]
        case = build_case(spec)
        exact = ExactAnswer(spec, case.x, case.w, case.b) if spec.is_valid else None
        prepared = Prepared(case, exact, inferred_output_shape(case.model))
        self._cases[key] = prepared
        if len(self._cases) > self._cache_size:
            self._cases.popitem(last=False)
        return prepared

    def run(self, spec: ConvTransposeSpec, backend_name: str, phase: Callable[[str], object] | None = None) -> Result:
        """One (config, backend) result.

        deploykit's own preparation (the float64 reference) comes first and may raise.  `phase`
        is told "backend" when the backend's own work (session creation, inference, timing)
        begins and "judging" when it ends: that span alone is `duration_ms` and what a worker's
        timeout counts.
        """
        phase = phase or (lambda name: None)
        result = Result.for_spec(spec, backend_name)
        backend, availability = self.backend(backend_name)
        result.backend_version = availability.version
        skipped = self._skip_reason(backend, availability, spec)
        if skipped:
            result.verdict, result.reason = skipped
        else:
            self._run_backend(backend, self.prepare(spec), result, phase)
        if result.verdict != "pass":
            known = divergences.match(self.known, spec, backend_name, result.verdict)
            result.known_divergence = known.id if known else None
        return result

    @staticmethod
    def _skip_reason(backend: Backend, availability: Availability, spec: ConvTransposeSpec) -> tuple[str, str] | None:
        if not availability.available:
            return "unavailable", availability.reason
        unsupported = backend.unsupported_reason(spec)
        return ("unsupported", unsupported) if unsupported else None

    def _time(self, runner, case: Case, setup_ms: float, result: Result) -> None:
        """Latency of a prepared runner (session creation stays outside the timed region)."""
        stats = measure(runner.iteration(case.feeds, self.timing.include_transfers), self.timing)
        result.latency_median_ms = stats.median_ms
        result.latency_p99_ms = stats.p99_ms
        result.latency_cv = stats.cv
        result.gflops = stats.gflops(case.spec.flops)
        result.setup_ms = setup_ms

    def _infer(self, backend: Backend, prepared: Prepared, result: Result) -> tuple[np.ndarray, str | None]:
        """Activate, run once, time if asked; returns the output and a timing problem, if any.

        Raises whatever the runtime raises: the caller turns that into `rejected`."""
        runner = backend.runner(prepared.case, self.threads)
        _, setup_ms = timed_ms(runner.activate)
        try:
            output = np.asarray(runner.infer(prepared.case.feeds))
            if self.timing is not None and prepared.case.spec.expect == "accept":
                try:
                    self._time(runner, prepared.case, setup_ms, result)
                except Exception as error:  # noqa: BLE001 - timing must not change the verdict
                    return output, f"latency not measured: {one_line(error)}"
            return output, None
        finally:
            runner.deactivate()

    def _run_backend(self, backend: Backend, prepared: Prepared, result: Result, phase: Callable[[str], object]) -> None:
        spec = prepared.case.spec
        if prepared.inferred_shape is not None:
            result.onnx_inferred_shape = list(prepared.inferred_shape)
        phase("backend")
        started = time.perf_counter()
        try:
            output, timing_problem = self._infer(backend, prepared, result)
        except Exception as error:  # noqa: BLE001 - any refusal is a finding, not a deploykit crash
            if spec.expect == "reject":
                result.reason = f"refused the spec-invalid model: {one_line(error)}"
            else:
                result.verdict, result.reason = "rejected", one_line(error)
            return
        finally:
            result.duration_ms = (time.perf_counter() - started) * 1e3
            phase("judging")
        result.actual_shape = list(output.shape)
        if spec.expect == "reject":
            result.verdict = "accepted-invalid"
            result.reason = f"ran it (output {list(output.shape)}) although {'; '.join(spec.violations())}"
            return
        models = backend.accumulation(spec.dtype)
        judgement = judge_output(spec, output, prepared.exact, models, self.tolerance)
        result.verdict, result.reason, drift = judgement.verdict, judgement.reason, judgement.drift
        result.accumulation = describe(models)
        result.float32_sum_ratio = judgement.float32_sum_ratio
        if timing_problem:
            result.reason = f"{result.reason}; {timing_problem}" if result.reason else timing_problem
        if drift is not None:
            result.max_abs_err = drift.max_abs_err
            result.max_rel_err = drift.max_rel_err
            result.rel_l2_err = drift.rel_l2_err
            result.max_ulp_err = drift.max_ulp_err
            result.bound_ratio = drift.bound_ratio
