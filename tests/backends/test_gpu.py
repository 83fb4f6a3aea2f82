"""GPU backends.  On a machine without the hardware or package these skip with the reason;
they never pass without running.  On a CPU-only machine, the probes must say why not."""

from __future__ import annotations

import sys

import pytest

from deploykit.backends import get
from deploykit.backends.timing import TimingOptions
from deploykit.conformance.matrix import load
from deploykit.execution.execute import Executor


def _skip_unless_available(name: str):
    status = get(name).probe()
    if not status.available:
        pytest.skip(f"{name} unavailable here: {status.reason}")


def test_gpu_backends_explain_why_they_are_unavailable(monkeypatch):
    """Each probe names what is missing and how to get it, not just "unavailable"."""
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    ort = get("ort-cuda").probe()
    assert not ort.available and ort.version == onnxruntime.__version__
    assert "CUDAExecutionProvider is not in this onnxruntime build" in ort.reason
    assert "pip install onnxruntime-gpu" in ort.reason
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    cpu_build = get("torch-cuda").probe()
    base = torch.__version__.split("+")[0]
    assert not cpu_build.available and "is a CPU-only build" in cpu_build.reason
    assert f"pip install --force-reinstall torch=={base}" in cpu_build.reason
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    no_device = get("torch-cuda").probe()
    assert no_device.reason == (f"torch {torch.__version__} (CUDA 13.0) sees no CUDA device; check the NVIDIA driver"
                                " (nvidia-smi) and CUDA_VISIBLE_DEVICES")


def test_torch_backends_without_torch_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    for name in ("torch-cpu", "torch-cuda"):
        status = get(name).probe()
        assert not status.available and "pip install 'deploykit[torch]'" in status.reason, status


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
    from deploykit.op.spec import ConvTransposeSpec

    spec = ConvTransposeSpec((1, 256, 16, 16), 128, (4, 4), strides=2, pads=1)
    strict = Executor(known=[]).run(spec, "torch-cuda")
    loose = Executor(known=[]).run(spec, "torch-cuda", precision="tf32")
    assert strict.verdict == "pass", strict.reason
    assert loose.verdict == "pass", loose.reason
