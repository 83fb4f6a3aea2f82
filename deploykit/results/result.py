"""One (config, backend, precision) result: the row the store keeps and every report reads.

Plain data with no runtime imported, so a report of an old database needs nothing installed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from deploykit.op.spec import ConvTransposeSpec
from deploykit.vocabulary import Verdict


@dataclass
class Result:
    """One row of the results store; the JSON report is a list of these."""

    config_id: str
    label: str
    backend: str
    dtype: str
    verdict: Verdict
    reason: str = ""
    #: the build precision (fp32, tf32, fp16, bf16): part of the result's identity
    precision: str = "fp32"
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
    # GPU compute time (CUDA events around the work) of the same samples, on GPU backends; the
    # latency_* figures above are then the host latency of the whole call.
    latency_gpu_median_ms: float | None = None
    latency_gpu_p99_ms: float | None = None
    gflops: float | None = None
    setup_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def backend_label(self) -> str:
        """The backend as reports show it: with its build precision unless that is the default."""
        return self.backend if self.precision == "fp32" else f"{self.backend} ({self.precision})"

    @classmethod
    def for_spec(cls, spec: ConvTransposeSpec, backend: str, verdict: Verdict = "pass", reason: str = "",
                 precision: str = "fp32") -> "Result":
        """A row with the config's identity filled in; the figures come later."""
        return cls(
            config_id=spec.id,
            label=spec.label,
            backend=backend,
            dtype=spec.dtype,
            verdict=verdict,
            reason=reason,
            precision=precision,
            expect=spec.expect,
            spec=spec.to_dict(),
            expected_shape=list(spec.output_full_shape) if spec.is_valid else None,
        )


@dataclass
class Run:
    """One stored run: what was asked (matrix, parameters), where (environment), and how far it got."""

    run_id: int
    started_at: float
    finished_at: float | None
    status: str
    matrix: str
    parameters: dict[str, Any]
    environment: dict[str, Any]
    planned: int
    owner: dict[str, Any] | None = None
    known_divergences: list[dict] | None = None  # None: a run from before schema 4

    @property
    def complete(self) -> bool:
        return self.status == "complete"
