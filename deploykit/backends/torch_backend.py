"""`torch-cpu`: eager `torch.nn.functional.conv_transposeNd`, mapped from the spec.

torch takes one symmetric, non-negative padding per axis, so configs whose resolved ONNX pads are
asymmetric or negative (zero extension) cannot be expressed as one call: they are `unsupported`,
which is a fact about torch's API, not a failure.
"""

from __future__ import annotations

import numpy as np

from deploykit.backends.base import Availability, Backend, CallableRunner
from deploykit.errors import lazy_import
from deploykit.onnxgen import Case
from deploykit.spec import ConvTransposeSpec

TORCH_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "float64": "float64"}


def torch_padding(spec: ConvTransposeSpec) -> tuple[int, ...] | str:
    """The symmetric `padding` for torch, or a one-line reason why there is none."""
    begin, end = spec.resolved_pads()
    if any(p < 0 for p in begin + end):
        return f"resolved pads {list(begin + end)} extend the output with zeros; torch cannot"
    if begin != end:
        return f"resolved pads {list(begin + end)} are asymmetric; torch pads both sides equally"
    return tuple(begin)


def to_numpy(tensor) -> np.ndarray:
    """Host copy as NumPy, bfloat16 included (NumPy has no native bfloat16)."""
    import ml_dtypes

    tensor = tensor.detach().cpu()
    if str(tensor.dtype) == "torch.bfloat16":
        import torch

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def from_numpy(array: np.ndarray, device: str):
    import torch

    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16).to(device)
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


class TorchCpuBackend(Backend):
    name = "torch-cpu"
    description = "PyTorch eager conv_transposeNd on CPU"
    device = "cpu"
    extra = "torch"

    def probe(self) -> Availability:
        try:
            torch = lazy_import("torch", "torch", self.extra)
        except ImportError as error:
            return Availability(False, None, str(error))
        return Availability(True, torch.__version__)

    def rounds_before_bias(self, dtype: str) -> bool:
        # Measured on torch 2.13 CPU: float16 conv_transpose3d equals conv(no bias) rounded to
        # float16, plus the bias in float16 (tests/test_backends.py pins it), so with cancellation
        # its error exceeds the single-rounding bound without being wrong.
        return dtype in ("float16", "bfloat16")

    def unsupported_reason(self, spec: ConvTransposeSpec) -> str | None:
        if spec.expect == "reject":
            return None  # torch must get the chance to refuse it
        padding = torch_padding(spec)
        return padding if isinstance(padding, str) else None

    def runner(self, case: Case, threads: int | None = None) -> CallableRunner:
        torch = lazy_import("torch", "torch", self.extra)
        spec = case.spec
        function = getattr(torch.nn.functional, f"conv_transpose{spec.rank}d")
        padding = torch_padding(spec)
        if isinstance(padding, str):
            padding = tuple(max(0, p) for p in spec.pads[: spec.rank])
        device = self.device
        if threads:
            torch.set_num_threads(threads)

        def infer(feeds: dict[str, np.ndarray]) -> np.ndarray:
            w = feeds.get("W", case.w)
            b = feeds.get("B", case.b) if spec.bias else None
            with torch.no_grad():
                y = function(
                    from_numpy(feeds["X"], device),
                    from_numpy(w, device),
                    None if b is None else from_numpy(b, device),
                    stride=spec.strides,
                    padding=padding,
                    output_padding=spec.output_padding,
                    groups=spec.group,
                    dilation=spec.dilations,
                )
            return to_numpy(y)

        return CallableRunner(infer)
