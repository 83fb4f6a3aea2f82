"""PyTorch backends: `torch-cpu` and `torch-cuda` (cuDNN), eager `conv_transposeNd` mapped from the spec.

torch takes one symmetric, non-negative padding per axis, so configs whose resolved ONNX pads are
asymmetric or negative (zero extension) cannot be expressed as one call: they are `unsupported`,
which is a fact about torch's API, not a failure.  ONNX files reach torch only when they are one
ConvTranspose node (`deploykit.onnxio.read.case_from_model` maps them to a spec).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deploykit.backends.base import Availability, Backend, BuildConfig, Capabilities, ReproRecipe, TensorMeta, case_inputs, pinned
from deploykit.backends.gpu_timing import Timed, capture_graph, event_timed
from deploykit.backends.timing import host_timed
from deploykit.errors import lazy_import
from deploykit.onnxio.write import Case
from deploykit.op.bound import Accumulation, OneSum, SumThenBias, TapSums
from deploykit.op.spec import ConvTransposeSpec


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


def _configure(device: str, config: BuildConfig):
    """Threads, and TF32 only when the build precision asks for it (float32 stays float32)."""
    torch = lazy_import("torch", "torch", "torch")
    if config.threads:
        torch.set_num_threads(config.threads)
    if device == "cuda":
        torch.backends.cudnn.allow_tf32 = config.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = config.precision == "tf32"
    return torch


def _invalid_limits(spec: ConvTransposeSpec) -> str | None:
    """Why a spec-invalid config cannot reach torch as it is (then torch would run another model
    and a verdict on it would be false), or None.  torch has no auto_pad or output_shape and pads
    both sides alike: only output_padding, group and a symmetric padding's rules reach it."""
    if spec.auto_pad != "NOTSET" or spec.output_shape is not None:
        return "torch has no auto_pad or output_shape, so this spec-invalid config cannot be given to it as it is"
    if spec.pads[: spec.rank] != spec.pads[spec.rank:]:
        return f"pads {list(spec.pads)} are asymmetric; torch pads both sides equally, so this spec-invalid config cannot be given to it"
    return None


def torch_options(spec: ConvTransposeSpec) -> dict:
    """The keyword arguments of the one `conv_transposeNd` call a spec maps to (as TorchRunner runs it)."""
    padding = torch_padding(spec)
    if isinstance(padding, str):  # only negative cases get here: torch judges the raw pads
        padding = tuple(spec.pads[: spec.rank])
    return dict(stride=spec.strides, padding=padding, output_padding=spec.output_padding, groups=spec.group,
                dilation=spec.dilations)


def torch_call_source(spec: ConvTransposeSpec, device: str) -> str:
    """`run()` for a repro script: the same torch call, its inputs read from the folder's files."""
    options = ", ".join(f"{name}={list(value) if isinstance(value, tuple) else value}" for name, value in torch_options(spec).items())
    bias = 'tensor("B")' if spec.bias else "None"
    return (
        "def run(model_path, feeds):  # the call deploykit makes: model.onnx is not read\n"
        "    dtype = getattr(torch, DTYPE)\n\n"
        "    def tensor(name):  # the files hold the exact values (bfloat16 ones as float32)\n"
        f"        return torch.from_numpy(np.load(HERE / f\"{{name}}.npy\")).to(dtype).to({device!r})\n\n"
        "    with torch.inference_mode():\n"
        f"        y = torch.nn.functional.conv_transpose{spec.rank}d(tensor(\"X\"), tensor(\"W\"), {bias}, {options})\n"
        "    return (y.float() if DTYPE == \"bfloat16\" else y).cpu().numpy()\n"
    )


class TorchRunner:
    """One ConvTranspose from its spec.  Weights go to the device once in `activate`; `infer`
    copies X in and Y out."""

    def __init__(self, case: Case, device: str, config: BuildConfig) -> None:
        self.case = case
        self.device = device
        self.config = config
        self._weights: tuple[Any, Any] | None = None  # torch's (weight, bias or None) on the device, once activated

    def activate(self) -> None:
        torch = _configure(self.device, self.config)
        spec = self.case.require_spec()
        self._function = getattr(torch.nn.functional, f"conv_transpose{spec.rank}d")
        self._options = torch_options(spec)
        self._weights = self._device_weights(self.case.feeds)

    def _device_weights(self, feeds: dict[str, np.ndarray]) -> tuple[Any, Any]:
        spec = self.case.require_spec()
        w = feeds.get("W", self.case.require_weights())
        b = feeds.get("B", self.case.b) if spec.bias else None
        return from_numpy(w, self.device), None if b is None else from_numpy(b, self.device)

    def _forward(self, x):
        import torch

        assert self._weights is not None, "activate() sets them"
        with torch.inference_mode():
            return self._function(x, *self._weights, **self._options)

    def input_metadata(self) -> list[TensorMeta]:
        return case_inputs(self.case)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "W" in feeds:
            self._weights = self._device_weights(feeds)
        [name] = self.case.output_names
        return {name: to_numpy(self._forward(from_numpy(feeds[self.case.input_name], self.device)))}

    def iteration(self, feeds: dict[str, np.ndarray], include_transfers: bool = False,
                  cuda_graph: bool = False) -> Timed:
        """X on the device once; a call is one `conv_transposeNd`.  On CUDA each sample is host
        latency and GPU compute time (CUDA events on the current stream around the call), and with
        `cuda_graph` the call is one replay of a CUDA graph of it (torch.cuda.graph)."""
        x_host = feeds[self.case.input_name]
        x_device = from_numpy(x_host, self.device)

        def call() -> None:
            if include_transfers:
                to_numpy(self._forward(from_numpy(x_host, self.device)))
            else:
                self._forward(x_device)

        if self.device != "cuda":
            return host_timed(call)
        if cuda_graph:
            return event_timed(capture_graph(lambda: self._forward(x_device), warmups=3))
        return event_timed(call)

    def deactivate(self) -> None:
        self._weights = None


def flatten_outputs(value) -> list:
    """Module outputs in the order the ONNX exporters flatten them (tuples, lists, dict values)."""
    if isinstance(value, dict):
        return [item for part in value.values() for item in flatten_outputs(part)]
    if isinstance(value, (tuple, list)):
        return [item for part in value for item in flatten_outputs(part)]
    if not hasattr(value, "detach"):
        raise TypeError(f"the module returns a {type(value).__name__}; deploykit compares tensor outputs only")
    return [value]


class TorchModuleRunner:
    """A torch module itself (eager), fed by the ONNX graph's input names in order."""

    def __init__(self, module, input_names: list[str], output_names: list[str], device: str, config: BuildConfig) -> None:
        self.module = module
        self.input_names = input_names
        self.output_names = output_names
        self.device = device
        self.config = config

    def activate(self) -> None:
        _configure(self.device, self.config)
        self.module = self.module.to(self.device)

    def input_metadata(self) -> list[TensorMeta]:
        return [TensorMeta(name, "?", ()) for name in self.input_names]

    def _forward(self, feeds: dict[str, np.ndarray]) -> list:
        import torch

        with torch.no_grad():
            return flatten_outputs(self.module(*(from_numpy(feeds[name], self.device) for name in self.input_names)))

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._forward(feeds)
        names = self.output_names or [f"output_{i}" for i in range(len(outputs))]
        return {name: to_numpy(tensor) for name, tensor in zip(names, outputs)}

    def iteration(self, feeds: dict[str, np.ndarray], include_transfers: bool = False,
                  cuda_graph: bool = False) -> Timed:
        if cuda_graph:
            raise RuntimeError("CUDA-graph replay is for single layers; a whole torch module is timed without it")
        return host_timed(lambda: self._forward(feeds)) if self.device != "cuda" else event_timed(lambda: self._forward(feeds))

    def deactivate(self) -> None:
        pass


class TorchCpuBackend(Backend):
    name = "torch-cpu"
    description = "PyTorch eager conv_transposeNd on CPU"
    extra = "torch"
    capabilities = Capabilities(device="cpu", loads_onnx=False, loads_spec=True, loads_torch_module=True)

    def probe(self) -> Availability:
        try:
            torch = lazy_import("torch", "torch", self.extra)
        except ImportError as error:
            return Availability(False, None, str(error))
        return Availability(True, torch.__version__)

    def accumulation(self, dtype: str, config: BuildConfig = BuildConfig()) -> tuple[Accumulation, ...]:
        # Measured on torch 2.13 (tests/op/test_accumulation.py): for float16/bfloat16 torch takes
        # oneDNN where the CPU has native support (AVX512-FP16 / AMX, AVX512-BF16), which sums in
        # float32 and rounds once; elsewhere (and whenever output_padding >= stride) its native
        # kernel runs a float32 GEMM per kernel tap, rounds it, and adds the taps and then the
        # bias in float16/bfloat16.  Which path runs depends on the machine: the bound takes both.
        if dtype in ("float16", "bfloat16"):
            return (OneSum("float32"), TapSums("float32", dtype))
        return super().accumulation(dtype, config)

    def spec_limits(self, case: Case) -> str | None:
        spec = case.require_spec()
        if spec.expect == "reject":
            return _invalid_limits(spec)  # torch must get the chance to refuse what it can be given
        padding = torch_padding(spec)
        return padding if isinstance(padding, str) else None

    def repro_recipe(self, spec: ConvTransposeSpec, version: str | None) -> ReproRecipe:
        return ReproRecipe("PyTorch", pinned("torch", version), "torch.__version__", "import torch",
                           torch_call_source(spec, self.device), reads_files=True)

    def load(self, case: Case, config: BuildConfig) -> TorchRunner | TorchModuleRunner:
        if case.module is not None:
            return TorchModuleRunner(case.module, list(case.feeds), case.output_names, self.device, config)
        return TorchRunner(case, self.device, config)


def _no_cuda_reason(version: str, cuda: str | None) -> str:
    """Why torch sees no GPU, and what to do: a CPU-only build needs another wheel, a CUDA build a
    driver or a visible device."""
    if cuda is None:
        base = version.split("+")[0]
        return (f"torch {version} is a CPU-only build; on a machine with an NVIDIA GPU install a CUDA build:"
                f" pip install --force-reinstall torch=={base} (PyPI's Linux wheels are CUDA builds)")
    return (f"torch {version} (CUDA {cuda}) sees no CUDA device; check the NVIDIA driver (nvidia-smi)"
            " and CUDA_VISIBLE_DEVICES")


class TorchCudaBackend(TorchCpuBackend):
    """cuDNN through PyTorch, timed with CUDA events.  TF32 is off unless the build precision is
    tf32 (float32 is judged as float32); tf32 allows it and widens the bound."""

    name = "torch-cuda"
    description = "PyTorch eager conv_transposeNd on CUDA (cuDNN)"
    capabilities = Capabilities(device="cuda", loads_onnx=False, loads_spec=True, loads_torch_module=True,
                                precisions=("fp32", "tf32"), cuda_graphs=True)

    def probe(self) -> Availability:
        available = super().probe()
        if not available.available:
            return available
        import torch

        if not torch.cuda.is_available():
            return Availability(False, torch.__version__, _no_cuda_reason(torch.__version__, torch.version.cuda))
        return Availability(True, f"{torch.__version__} (CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)})")

    def accumulation(self, dtype: str, config: BuildConfig = BuildConfig()) -> tuple[Accumulation, ...]:
        # Measured on an H200 (torch 2.11 + cuDNN 9.19, tests/backends/test_gpu_fixture.py): for float16 and
        # bfloat16 cuDNN sums the products in float32 and rounds the result to the dtype once (exact
        # on 240 accumulation probes), then torch adds the bias in a separate elementwise kernel that
        # rounds once more: an emulation of that order matches 99.9% of the outputs bit for bit (the
        # rest differ only in the float32 order), and one float32 sum with the bias fails 97 of 126
        # biased results.
        if dtype in ("float16", "bfloat16"):
            return (SumThenBias("float32", dtype),)
        if dtype == "float32" and config.precision == "tf32":
            return (OneSum("float32", operands="tfloat32"),)
        return Backend.accumulation(self, dtype, config)
