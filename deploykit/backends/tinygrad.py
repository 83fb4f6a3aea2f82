"""`tinygrad-cpu`: tinygrad's own ONNX runner (`tinygrad.nn.onnx.OnnxRunner`) on its CPU device.

`OnnxRunnerFromBytes` is the loader (ONNX bytes + build config -> parsed runner); every call runs
under `Context(DEV="CPU")`, so tinygrad never picks another device.  Measured on tinygrad 0.14.0
with Debian's clang 14 (tests/op/test_accumulation.py, tests/backends/test_cpu_runtimes.py):
- the CPU device compiles every kernel (and its own worker programs) with a `clang` binary, on
  every renderer: without one it is `unavailable`, and the reason names the fix;
- float16 and bfloat16 sum the products in float32, round that sum to the dtype, and add the bias
  in the dtype; whether each product is rounded to the dtype first depends on the renderer (CLANG
  rounds bfloat16 products, X86 and LLVM float16 ones too), so the declared model rounds them:
  SumThenBias(float32, dtype, rounded_products);
- a bfloat16 output comes back as float32 (tinygrad's `Tensor.numpy()` has no bfloat16): the
  values are still bfloat16 values, and deploykit judges values, not the array's dtype;
- it validates no output_padding, and computes auto_pad VALID as SAME_LOWER (input x stride):
  both are known divergences.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from deploykit.backends.base import Availability, Backend, BuildConfig, Capabilities, ReproRecipe, TensorMeta, case_inputs, pinned
from deploykit.backends.timing import host_timed
from deploykit.errors import lazy_import
from deploykit.onnxio.write import Case
from deploykit.op.bound import Accumulation, OneSum, SumThenBias

#: tinygrad's device for everything this backend runs (its CLANG renderer by default)
DEVICE = "CPU"
NO_CLANG = ("tinygrad's CPU device compiles with clang, which is not on PATH;"
            " install it (Debian/Ubuntu: apt-get install clang)")


def _context(config: BuildConfig):
    """tinygrad's settings for one call: the CPU device, and its thread count when one is asked for."""
    helpers = lazy_import("tinygrad.helpers", "tinygrad", "tinygrad")
    settings: dict[str, str | int] = {"DEV": DEVICE}
    if config.threads:
        settings["NUM_CPU_THREADS"] = int(config.threads)
    return helpers.Context(**settings)


@dataclass(frozen=True)
class OnnxRunnerFromBytes:
    """Loader: ONNX bytes parsed by tinygrad's own ONNX runner (no onnx package involved)."""

    model_bytes: bytes
    config: BuildConfig

    def __call__(self):
        tinygrad = lazy_import("tinygrad", "tinygrad", "tinygrad")
        onnx_runner = lazy_import("tinygrad.nn.onnx", "tinygrad", "tinygrad")
        with _context(self.config):
            return onnx_runner.OnnxRunner(tinygrad.Tensor(self.model_bytes))


class TinygradRunner:
    """One parsed model; feeds by name, outputs realised and copied to the host by name."""

    def __init__(self, load: Callable[[], object], case: Case, config: BuildConfig) -> None:
        self._load = load
        self._config = config
        self._inputs = case_inputs(case)
        self._outputs = case.output_names
        self.runner: Any = None  # tinygrad's OnnxRunner once activated (Any: tinygrad has no type hints)

    def activate(self) -> None:
        self.runner = self._load()

    def input_metadata(self) -> list[TensorMeta]:
        return list(self._inputs)

    def _feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feeds of exactly the graph's types (tinygrad only warns, and computes in the feed's type)."""
        checked = {}
        for meta in self._inputs:
            array = np.ascontiguousarray(feeds[meta.name])
            if array.dtype.name != meta.dtype:
                raise TypeError(f"input {meta.name} is {meta.dtype}, got {array.dtype}")
            checked[meta.name] = array
        return checked

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = self._feeds(feeds)
        with _context(self._config):
            outputs = self.runner(feeds)
            return {name: outputs[name].numpy() for name in self._outputs}

    def iteration(self, feeds: dict[str, np.ndarray], include_transfers: bool = False) -> Callable[[], float]:
        """Each sample runs the graph and realises its outputs on the device (copied to the host
        only with transfers); inputs enter as host arrays on every call, as OnnxRunner takes them."""
        if include_transfers:
            return host_timed(lambda: self.infer(feeds))
        feeds = self._feeds(feeds)

        def run_once() -> None:
            with _context(self._config):
                for tensor in self.runner(feeds).values():
                    tensor.realize()

        return host_timed(run_once)

    def deactivate(self) -> None:
        self.runner = None


class TinygradCpuBackend(Backend):
    name = "tinygrad-cpu"
    description = "tinygrad (its ONNX runner), CPU device"
    extra = "tinygrad"
    # it compiles every config (0.1 to 4 s on 2 cores): part of a conformance run when named
    capabilities = Capabilities(device="cpu", precisions=("fp32",), in_default_run=False)

    def probe(self) -> Availability:
        from importlib.metadata import PackageNotFoundError, version

        try:
            lazy_import("tinygrad", "tinygrad", self.extra)
            found = version("tinygrad")
        except (ImportError, PackageNotFoundError) as error:
            return Availability(False, None, str(error))
        if shutil.which("clang") is None:
            return Availability(False, found, NO_CLANG)
        return Availability(True, found)

    def accumulation(self, dtype: str, config: BuildConfig = BuildConfig()) -> tuple[Accumulation, ...]:
        if dtype in ("float16", "bfloat16"):
            return (SumThenBias("float32", dtype, rounded_products=True),)
        return (OneSum(dtype),)

    def load(self, case: Case, config: BuildConfig) -> TinygradRunner:
        return TinygradRunner(OnnxRunnerFromBytes(case.model_bytes, config), case, config)

    def repro_recipe(self, spec, version: str | None) -> ReproRecipe:
        run = (
            "def run(model_path, feeds):  # the CPU device compiles with clang (Debian: apt-get install clang)\n"
            "    from tinygrad import Tensor\n"
            "    from tinygrad.helpers import Context\n"
            "    from tinygrad.nn.onnx import OnnxRunner\n"
            "    with Context(DEV=\"CPU\"):\n"
            "        outputs = OnnxRunner(Tensor(Path(model_path).read_bytes()))(feeds)\n"
            "        return next(iter(outputs.values())).numpy()\n"
        )
        return ReproRecipe("tinygrad", pinned("tinygrad", version), "importlib.metadata.version(\"tinygrad\")",
                           "import importlib.metadata", run)
