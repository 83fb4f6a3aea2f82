"""The timing statistics on synthetic samples, and the warm-up / sampling loop on a fake clock."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit.backends.timing import NOISY_CV, TimingOptions, compute_stats, measure


def test_percentiles_are_linear_interpolated_order_statistics():
    stats = compute_stats([float(v) for v in range(1, 101)])  # 1..100 ms
    assert stats.samples == 100
    assert stats.min_ms == 1 and stats.max_ms == 100
    assert stats.median_ms == 50.5 and stats.mean_ms == 50.5
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p95_ms == pytest.approx(95.05)
    assert stats.p99_ms == pytest.approx(99.01)


def test_cv_and_the_noise_warning():
    steady = compute_stats([10.0] * 20)
    assert steady.cv == 0 and steady.std_ms == 0 and steady.warnings == []
    noisy = compute_stats([10.0, 12.0] * 10)
    expected = np.std([10.0, 12.0] * 10, ddof=1) / 11.0
    assert noisy.cv == pytest.approx(expected)
    assert noisy.cv > NOISY_CV and any("noisy" in w for w in noisy.warnings)


def test_too_few_samples_warns():
    assert any("only 3 samples" in w for w in compute_stats([1.0, 1.0, 1.0]).warnings)


def test_throughput_and_gflops():
    stats = compute_stats([2.0] * 10)
    assert stats.throughput_per_s(batch=8) == pytest.approx(4000.0)
    assert stats.gflops(4_000_000_000) == pytest.approx(2000.0)


class FakeClock:
    """Advances by each iteration's own latency, so the loop sees a deterministic timeline."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_warmup_is_by_time_and_excluded_from_the_samples():
    clock = FakeClock()
    latencies = iter([50.0] * 4 + [1.0] * 10_000)  # four slow warm-up calls (cold caches)

    def iteration() -> float:
        ms = next(latencies)
        clock.now += ms / 1e3
        return ms

    stats = measure(iteration, TimingOptions(warmup_ms=200, iterations=10, duration_s=0.5), clock)
    assert stats.warmup_runs == 4  # 4 x 50 ms reaches the 200 ms warm-up
    assert stats.max_ms == 1.0  # none of the slow calls is a sample
    assert stats.samples == 500  # duration 0.5 s of 1 ms calls beats the 10-iteration minimum


def test_iterations_minimum_wins_over_a_short_duration():
    clock = FakeClock()

    def iteration() -> float:
        clock.now += 0.1
        return 100.0

    stats = measure(iteration, TimingOptions(warmup_ms=0, iterations=7, duration_s=0.01), clock)
    assert stats.samples == 7 and stats.warmup_runs == 1


def test_no_samples_is_an_error_and_one_sample_is_a_warning():
    with pytest.raises(ValueError, match="no timing samples"):
        compute_stats([])
    single = compute_stats([2.5])
    assert (single.samples, single.min_ms, single.median_ms, single.p99_ms, single.max_ms) == (1, 2.5, 2.5, 2.5, 2.5)
    assert single.std_ms == single.cv == 0.0
    assert single.warnings == ["only 1 samples (< 10); raise --duration or --iterations"]


@pytest.mark.parametrize("never", [float("inf"), float("nan")])
def test_a_warm_up_and_duration_never_reached_stop_at_the_iteration_cap(never):
    calls = 0

    def iteration() -> float:  # the clock never moves: only the cap can end either loop
        nonlocal calls
        calls += 1
        if calls > 10_000:
            raise RuntimeError("the loop does not stop")
        return 1.0

    stats = measure(iteration, TimingOptions(warmup_ms=never, iterations=5, duration_s=never, max_iterations=50), FakeClock())
    assert stats.warmup_runs == 50 and stats.samples == 50
