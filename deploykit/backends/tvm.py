"""`tvm-cpu`: Apache TVM's Relax ONNX frontend, compiled for the host CPU (llvm) and run on the Relax VM.

`ExecutableFromOnnx` is the loader (ONNX bytes + build config -> compiled executable); the runner
feeds `tvm.runtime.tensor`s of exactly the graph's element types.  Measured on apache-tvm
0.27.0.post1 (tests/op/test_accumulation.py, tests/backends/test_cpu_runtimes.py):
- float16 and bfloat16 sum every product in the dtype itself (topi's sum in the output dtype, one
  input channel at a time, kernel taps inner), and add the bias in the dtype: OneSum(dtype).  That
  bound is loose (a worst case of K roundings) and infinite for bfloat16 once K u >= 1, where
  deploykit says `unsupported` instead of judging;
- the target is generic x86-64 (`llvm`) unless the build config's hint `mcpu` names a CPU (e.g.
  `sapphirerapids`): that adds FMA contraction and native half arithmetic (the same model covers
  both) and makes float16 about 10x faster; no CPU schedule is applied, so it runs single-threaded;
- `Tensor.copyfrom` of a float16 array into a bfloat16 tensor reinterprets the bits without an
  error (conformance/repros/tvm-copyfrom-bfloat16-reinterprets): a feed whose dtype differs from
  the graph's is refused, never converted;
- the converter prints its refusals to stdout/stderr (and a C++ warning) before it raises: the
  build runs with both descriptors silenced, and the exception carries the message.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from deploykit.backends.base import Availability, Backend, BuildConfig, Capabilities, ReproRecipe, TensorMeta, case_inputs, pinned
from deploykit.backends.timing import host_timed
from deploykit.errors import lazy_import
from deploykit.onnxio.write import Case
from deploykit.op.bound import Accumulation, OneSum


def _tvm():
    return lazy_import("tvm", "apache-tvm", "tvm")


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """File descriptors 1 and 2 to a scratch file, Python warnings off: TVM's converter prints
    from Python and C++ ('Error converting operator ...', 'BlockBuilder destroyed ...')."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no descriptors to silence (an embedded interpreter)
        yield
        return
    with tempfile.TemporaryFile() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(scratch.fileno(), 1)
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)


def llvm_target(config: BuildConfig):
    """The llvm target, for the CPU the `mcpu` hint names (generic x86-64 without it).  TVM 0.27
    takes a target as a JSON-like dict only, and `tvm.compile` needs it wrapped in a Target."""
    tvm = _tvm()
    mcpu = config.hint("mcpu")
    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu} if mcpu else "llvm")


@dataclass(frozen=True)
class ExecutableFromOnnx:
    """Loader: ONNX bytes -> Relax module (`from_onnx`, dtypes and shapes from the graph) -> compiled executable."""

    model_bytes: bytes
    config: BuildConfig

    def __call__(self):
        with _silenced():
            try:
                return self._compile()
            except Exception as error:  # noqa: BLE001 - re-raised below, with its message
                refusal = str(error).strip() or type(error).__name__
            # The converter's BlockBuilder warns when it is destroyed: here, still silenced,
            # rather than whenever the exception's frames happen to be freed.
            gc.collect()
        raise RuntimeError(refusal)

    def _compile(self):
        import onnx

        tvm = _tvm()
        from tvm.relax.frontend.onnx import from_onnx

        module = from_onnx(onnx.load_from_string(self.model_bytes))
        return tvm.compile(module, target=llvm_target(self.config))


class TvmRunner:
    """One compiled executable on a Relax VM; inputs are positional in graph order."""

    def __init__(self, load: Callable[[], object], case: Case) -> None:
        self._load = load
        self._inputs = case_inputs(case)
        self._outputs = case.output_names
        self.vm: Any = None  # tvm's relax.VirtualMachine once activated (Any: tvm has no type hints)

    def activate(self) -> None:
        relax = lazy_import("tvm.relax", "apache-tvm", "tvm")
        executable = self._load()
        self.device = _tvm().cpu()
        self.vm = relax.VirtualMachine(executable, self.device)

    def input_metadata(self) -> list[TensorMeta]:
        return list(self._inputs)

    def _tensors(self, feeds: dict[str, np.ndarray]) -> list:
        """Device tensors of exactly the graph's types: any mismatch raises instead of converting
        (a float16 array copied into a bfloat16 tensor would keep its bits, not its values)."""
        tvm, tensors = _tvm(), []
        for meta in self._inputs:
            array = np.ascontiguousarray(feeds[meta.name])
            if array.dtype.name != meta.dtype:
                raise TypeError(f"input {meta.name} is {meta.dtype}, got {array.dtype}")
            tensors.append(tvm.runtime.tensor(array, self.device))
        return tensors

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.vm["main"](*self._tensors(feeds))
        values = list(result) if len(self._outputs) > 1 else [result]  # one output: a Tensor, else an Array
        return {name: value.numpy() for name, value in zip(self._outputs, values)}

    def iteration(self, feeds: dict[str, np.ndarray], include_transfers: bool = False) -> Callable[[], float]:
        """Inputs bound once as device tensors; each sample runs the VM function (output copies
        only with transfers)."""
        if include_transfers:
            return host_timed(lambda: self.infer(feeds))
        tensors, function = self._tensors(feeds), self.vm["main"]
        return host_timed(lambda: function(*tensors))

    def deactivate(self) -> None:
        self.vm = None


class TvmCpuBackend(Backend):
    name = "tvm-cpu"
    description = "Apache TVM Relax (ONNX frontend, llvm target, Relax VM), CPU"
    extra = "tvm"
    # it compiles every config (0.1 to 4 s on 2 cores): part of a conformance run when named
    capabilities = Capabilities(device="cpu", precisions=("fp32",), in_default_run=False)

    def probe(self) -> Availability:
        try:
            tvm = _tvm()
        except ImportError as error:
            return Availability(False, None, str(error))
        return Availability(True, tvm.__version__)

    def accumulation(self, dtype: str, config: BuildConfig = BuildConfig()) -> tuple[Accumulation, ...]:
        return (OneSum(dtype),)  # every product summed in the dtype itself, bias added in it

    def load(self, case: Case, config: BuildConfig) -> TvmRunner:
        return TvmRunner(ExecutableFromOnnx(case.model_bytes, config), case)

    def repro_recipe(self, spec, version: str | None) -> ReproRecipe:
        run = (
            "def run(model_path, feeds):  # Relax's ONNX frontend, compiled for the host CPU\n"
            "    from tvm import relax\n"
            "    from tvm.relax.frontend.onnx import from_onnx\n"
            "    executable = tvm.compile(from_onnx(onnx.load(model_path)), target=tvm.target.Target(\"llvm\"))\n"
            "    vm = relax.VirtualMachine(executable, tvm.cpu())\n"
            "    return vm[\"main\"](*[tvm.runtime.tensor(feeds[name]) for name in FEEDS]).numpy()\n"
        )
        return ReproRecipe("Apache TVM", f"{pinned('apache-tvm', version)} onnx", "tvm.__version__", "import onnx\nimport tvm", run)
