"""The timing engine: warm-up by time, then at least N iterations and at least D seconds.

Method after trtexec: the warm-up runs until `warmup_ms` has passed (at least once), then samples
are taken one call at a time until both `iterations` and `duration_s` are reached.  Every sample is
kept, so percentiles are exact order statistics of what ran, not of a histogram.  How one sample is
timed is the runner's business; this module only drives and summarises.  A sample is a latency in ms
(host `perf_counter_ns` around a synchronous call) or a `gpu_timing.Sample` with a host latency and a
GPU compute time (CUDA events around the work): then both are summarised, as two figures.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from deploykit.backends.gpu_timing import Sample, Timed

#: trtexec and pytest-benchmark both call a run noisy past a few percent of CV.
NOISY_CV = 0.025
MIN_SAMPLES = 10


@dataclass(frozen=True)
class TimingOptions:
    warmup_ms: float = 200.0
    iterations: int = 10
    duration_s: float = 1.0
    include_transfers: bool = False
    #: a hard cap so a pathological config cannot run for ever
    max_iterations: int = 100_000
    #: replay a CUDA graph of one inference per sample (GPU backends that can capture one)
    cuda_graph: bool = False

    def as_dict(self) -> dict:
        """The options as stored with a run; `cuda_graph` only when on, so runs timed the usual way
        keep the parameters older runs stored (resume and merge compare them)."""
        data = asdict(self)
        if not self.cuda_graph:
            del data["cuda_graph"]
        return data

    @property
    def mode(self) -> str:
        return "cuda-graph" if self.cuda_graph else "plain"


#: The conformance matrix times every config, so it takes shorter defaults.
MATRIX_TIMING = TimingOptions(warmup_ms=50.0, iterations=10, duration_s=0.2)


@dataclass
class Stats:
    samples: int
    min_ms: float
    median_ms: float
    mean_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float
    cv: float
    warmup_runs: int = 0
    warnings: list[str] = field(default_factory=list)
    #: GPU compute time (CUDA events around the work) of the same samples; the fields above are then
    #: the host latency of the whole call.  None on CPU backends, or with `gpu_note` saying why not.
    gpu: "Stats | None" = None
    gpu_note: str | None = None

    def throughput_per_s(self, batch: int = 1) -> float:
        """Inferences per second at the median latency (batch items per call)."""
        return batch * 1e3 / self.median_ms if self.median_ms > 0 else math.inf

    def gflops(self, flops: int) -> float:
        """Achieved GFLOP/s at the median latency."""
        return flops / (self.median_ms * 1e6) if self.median_ms > 0 else math.inf

    def compute_gflops(self, flops: int) -> float:
        """GFLOP/s of the work itself: at the GPU compute median where there is one, else the host median."""
        return (self.gpu or self).gflops(flops)

    def figures(self) -> dict:
        """The distribution alone (no warnings or nested figures): what a report shows for GPU compute."""
        return {key: getattr(self, key) for key in ("min_ms", "median_ms", "mean_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms",
                                                     "std_ms", "cv", "samples")}

    def as_dict(self) -> dict:
        return asdict(self)


def compute_stats(samples_ms: list[float], *, warmup_runs: int = 0, min_samples: int = MIN_SAMPLES) -> Stats:
    """Summary statistics of per-iteration latencies (linear-interpolated percentiles)."""
    if not samples_ms:
        raise ValueError("no timing samples")
    data = np.asarray(samples_ms, dtype=np.float64)
    p90, p95, p99 = np.percentile(data, [90, 95, 99])
    mean = float(data.mean())
    std = float(data.std(ddof=1)) if data.size > 1 else 0.0
    cv = std / mean if mean > 0 else 0.0
    warnings = []
    if cv > NOISY_CV:
        warnings.append(f"noisy: coefficient of variation {cv:.1%} > {NOISY_CV:.1%}")
    if data.size < min_samples:
        warnings.append(f"only {data.size} samples (< {min_samples}); raise --duration or --iterations")
    return Stats(
        samples=int(data.size),
        min_ms=float(data.min()),
        median_ms=float(np.median(data)),
        mean_ms=mean,
        p90_ms=float(p90),
        p95_ms=float(p95),
        p99_ms=float(p99),
        max_ms=float(data.max()),
        std_ms=std,
        cv=cv,
        warmup_runs=warmup_runs,
        warnings=warnings,
    )


def measure(
    iteration: Timed,
    options: TimingOptions = TimingOptions(),
    clock: Callable[[], float] = time.perf_counter,
) -> Stats:
    """Warm up for `options.warmup_ms`, then sample `iteration()` (which returns one latency in ms, or a `Sample`).

    `clock` decides when to stop warming up and sampling (wall time); it is injectable so tests
    can drive the loop deterministically.  Both loops stop at `max_iterations` calls, so a warm-up
    or duration that is never reached (NaN, infinite) cannot run for ever.
    """
    warmup_runs = 0
    start = clock()
    while True:
        iteration()
        warmup_runs += 1
        if (clock() - start) * 1e3 >= options.warmup_ms or warmup_runs >= options.max_iterations:
            break
    samples: list[float | Sample] = []
    start = clock()
    while len(samples) < options.max_iterations:
        samples.append(iteration())
        if len(samples) >= options.iterations and clock() - start >= options.duration_s:
            break
    return summarise(samples, warmup_runs, min(MIN_SAMPLES, options.iterations), getattr(iteration, "gpu_note", None))


def summarise(samples: list[float | Sample], warmup_runs: int, min_samples: int, gpu_note: str | None = None) -> Stats:
    """Host statistics of every sample, and GPU compute statistics when every sample has a GPU figure."""
    host = [s.host_ms if isinstance(s, Sample) else float(s) for s in samples]
    stats = compute_stats(host, warmup_runs=warmup_runs, min_samples=min_samples)
    gpu = [s.gpu_ms for s in samples if isinstance(s, Sample) and s.gpu_ms is not None]
    if gpu and len(gpu) == len(samples):
        stats.gpu = compute_stats(gpu, warmup_runs=warmup_runs, min_samples=min_samples)
        stats.warnings += [f"GPU compute: {w}" for w in stats.gpu.warnings if w.startswith("noisy")]
    else:
        stats.gpu_note = gpu_note
    return stats


def host_timed(call: Callable[[], object]) -> Callable[[], float]:
    """One sample = wall time of a synchronous call, from perf_counter_ns."""

    def iteration() -> float:
        begin = time.perf_counter_ns()
        call()
        return (time.perf_counter_ns() - begin) / 1e6

    return iteration


def timed_ms(call: Callable[[], object]) -> tuple[object, float]:
    """Run once and return (result, elapsed ms): for setup times such as session creation."""
    begin = time.perf_counter_ns()
    value = call()
    return value, (time.perf_counter_ns() - begin) / 1e6
