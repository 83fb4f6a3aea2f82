"""GPU backends.  On a machine without the hardware or package these skip with the reason;
they never pass without running.  On a CPU-only machine, the probes must say why not."""

from __future__ import annotations

import pytest

from deploykit.backends import get
from deploykit.execute import Executor
from deploykit.matrix import load
from deploykit.timing import TimingOptions


def _skip_unless_available(name: str):
    status = get(name).probe()
    if not status.available:
        pytest.skip(f"{name} unavailable here: {status.reason}")


def test_gpu_backends_explain_why_they_are_unavailable():
    for name in ("torch-cuda", "ort-cuda"):
        status = get(name).probe()
        assert status.available or status.reason, name


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch-cuda", "ort-cuda"])
def test_smoke_matrix_on_gpu(backend):
    _skip_unless_available(backend)
    executor = Executor(latency=TimingOptions(warmup_ms=20, iterations=10, duration_s=0.05).as_dict())
    failures = []
    timed = 0
    for spec in load("smoke").specs:
        result = executor.run(spec, backend)
        timed += result.latency_median_ms is not None
        if result.verdict not in ("pass", "unsupported") and not result.known_divergence:
            failures.append(f"{spec.label}: {result.verdict}: {result.reason}")
    assert not failures, failures
    assert timed > 10


@pytest.mark.gpu
def test_torch_cuda_tf32_widens_the_bound_instead_of_failing():
    _skip_unless_available("torch-cuda")
    from deploykit.spec import ConvTransposeSpec

    spec = ConvTransposeSpec((1, 256, 16, 16), 128, (4, 4), strides=2, pads=1)
    strict = Executor(known=[]).run(spec, "torch-cuda")
    loose = Executor(known=[], precision="tf32").run(spec, "torch-cuda")
    assert strict.verdict == "pass", strict.reason
    assert loose.verdict == "pass", loose.reason
