"""PyTorch backends: `torch-cpu` and `torch-cuda` (cuDNN), eager `conv_transposeNd` mapped from the spec.

torch takes one symmetric, non-negative padding per axis, so configs whose resolved ONNX pads are
asymmetric or negative (zero extension) cannot be expressed as one call: they are `unsupported`,
which is a fact about torch's API, not a failure.  ONNX files reach torch only when they are one
ConvTranspose node (`deploykit.onnxread.case_from_model` maps them to a spec).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from deploykit.backends.base import Availability, Backend
from deploykit.bound import Accumulation, OneSum, TapSums
from deploykit.errors import lazy_import
from deploykit.onnxgen import Case
from deploykit.spec import ConvTransposeSpec
from deploykit.timing import host_timed


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
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def from_numpy(array: np.ndarray, device: str):
    import torch

    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16).to(device)
    if not array.flags.writeable:  # e.g. weights read from an ONNX file: torch wants writable memory
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


class TorchRunner:
    """Weights go to the device once in `activate`; `infer` copies X in and Y out."""

    def __init__(self, case: Case, device: str, threads: int | None, allow_tf32: bool) -> None:
        self.case = case
        self.device = device
        self.threads = threads
        self.allow_tf32 = allow_tf32
        self._weights = None

    def activate(self) -> None:
        torch = lazy_import("torch", "torch", "torch")
        spec = self.case.spec
        if self.threads:
            torch.set_num_threads(self.threads)
        if self.device == "cuda":
            torch.backends.cudnn.allow_tf32 = self.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = self.allow_tf32
        padding = torch_padding(spec)
        if isinstance(padding, str):  # only negative cases get here: let torch judge the raw pads
            padding = tuple(spec.pads[: spec.rank])
        self._function = getattr(torch.nn.functional, f"conv_transpose{spec.rank}d")
        self._options = dict(
            stride=spec.strides, padding=padding, output_padding=spec.output_padding,
            groups=spec.group, dilation=spec.dilations,
        )
        self._weights = self._device_weights(self.case.feeds)

    def _device_weights(self, feeds: dict[str, np.ndarray]):
        spec = self.case.spec
        w = feeds.get("W", self.case.w)
        b = feeds.get("B", self.case.b) if spec.bias else None
        return from_numpy(w, self.device), None if b is None else from_numpy(b, self.device)

    def _forward(self, x):
        import torch

        with torch.inference_mode():
            return self._function(x, *self._weights, **self._options)

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if "W" in feeds:
            self._weights = self._device_weights(feeds)
        return to_numpy(self._forward(from_numpy(feeds[self.case.input_name], self.device)))

    def iteration(self, feeds: dict[str, np.ndarray], include_transfers: bool = False) -> Callable[[], float]:
        x_host = feeds[self.case.input_name]
        x_device = from_numpy(x_host, self.device)

        def call() -> None:
            if include_transfers:
                to_numpy(self._forward(from_numpy(x_host, self.device)))
            else:
                self._forward(x_device)

        if self.device != "cuda":
            return host_timed(call)
        import torch

        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)

        def cuda_iteration() -> float:
            start.record()
            call()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))

        return cuda_iteration

    def deactivate(self) -> None:
        self._weights = None


class TorchCpuBackend(Backend):
    name = "torch-cpu"
    description = "PyTorch eager conv_transposeNd on CPU"
    device = "cpu"
    extra = "torch"
    needs_spec = True

    def probe(self) -> Availability:
        try:
            torch = lazy_import("torch", "torch", self.extra)
        except ImportError as error:
            return Availability(False, None, str(error))
        return Availability(True, torch.__version__)

    def accumulation(self, dtype: str) -> tuple[Accumulation, ...]:
        # Measured on torch 2.13 (tests/test_accumulation.py): for float16/bfloat16 torch takes
        # oneDNN where the CPU has native support (AVX512-FP16 / AMX, AVX512-BF16), which sums in
        # float32 and rounds once; elsewhere (and whenever output_padding >= stride) its native
        # kernel runs a float32 GEMM per kernel tap, rounds it, and adds the taps and then the
        # bias in float16/bfloat16.  Which path runs depends on the machine: the bound takes both.
        if dtype in ("float16", "bfloat16"):
            return (OneSum("float32"), TapSums("float32", dtype))
        return super().accumulation(dtype)

    def unsupported_reason(self, spec: ConvTransposeSpec) -> str | None:
        if spec.expect == "reject":
            return None  # torch must get the chance to refuse it
        padding = torch_padding(spec)
        return padding if isinstance(padding, str) else None

    def runner(self, case: Case, threads: int | None = None) -> TorchRunner:
        return TorchRunner(case, self.device, threads, allow_tf32=False)


class TorchCudaBackend(TorchCpuBackend):
    """cuDNN through PyTorch, timed with CUDA events.  TF32 is off for conformance (float32 is
    judged as float32); `precision="tf32"` (`--precision tf32`) allows it and widens the bound."""

    name = "torch-cuda"
    description = "PyTorch eager conv_transposeNd on CUDA (cuDNN)"
    device = "cuda"

    def probe(self) -> Availability:
        available = super().probe()
        if not available.available:
            return available
        import torch

        if not torch.cuda.is_available():
            return Availability(False, torch.__version__, f"torch {torch.__version__} sees no CUDA device")
        return Availability(True, f"{torch.__version__} (CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)})")

    def accumulation(self, dtype: str) -> tuple[Accumulation, ...]:
        # cuDNN's float16 order has not been measured on a GPU yet: the float32 default stands.
        if dtype == "float32" and self.precision == "tf32":
            return (OneSum("tfloat32"),)
        return Backend.accumulation(self, dtype)

    def runner(self, case: Case, threads: int | None = None) -> TorchRunner:
        return TorchRunner(case, self.device, threads, allow_tf32=self.precision == "tf32")
