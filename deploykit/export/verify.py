"""Whole-model verification: each backend's outputs against torch float64 eager on the same inputs.

The float64 reference runs the user's module with its parameters and buffers upcast exactly
(`torch.func.functional_call`), never a deep copy: modules such as `weight_norm` hold non-leaf
tensors that cannot be deep-copied.  With dynamic axes the model is verified at a second size too,
since an exporter can bake the example's size into a graph that claims to be dynamic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from deploykit import backends as registry
from deploykit.backends.base import BuildConfig
from deploykit.backends.torch_backend import flatten_outputs, to_numpy
from deploykit.errors import UsageError, lazy_import
from deploykit.execution.execute import one_line, run_backend
from deploykit.onnxio.read import graph_inputs
from deploykit.onnxio.write import Case
from deploykit.op.bound import UNIT_ROUNDOFF
from deploykit.op.judging import error_figures


@dataclass
class OutputCheck:
    backend: str
    output: str
    verdict: str
    reason: str = ""
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    rel_l2_err: float | None = None
    shape: list[int] | None = None
    input_shapes: list[list[int]] | None = None


def _float64_state(module) -> dict:
    """Every parameter and buffer by name, floating ones upcast (exact), for functional_call.

    A tensor tied under several names (`b.weight = a.weight`) gets one float64 copy, so it stays
    tied.  A submodule registered under two names is swapped under its first name only: torch
    2.13's functional_call, swapping the same slot twice, restores the float64 copy instead of the
    user's parameter.
    """
    state, slots, upcast = {}, set(), {}
    named = list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False))
    for name, tensor in named:
        prefix, _, attribute = name.rpartition(".")
        slot = (id(module.get_submodule(prefix)), attribute)
        if slot in slots:
            continue
        slots.add(slot)
        if id(tensor) not in upcast:
            upcast[id(tensor)] = tensor.detach().double() if tensor.is_floating_point() else tensor
        state[name] = upcast[id(tensor)]
    return state


def float64_outputs(module, inputs: tuple) -> list[np.ndarray]:
    """The module in float64: every floating parameter and buffer upcast (exact), floating inputs too.

    The default dtype is float64 meanwhile, so tensors the forward creates itself match.  Weights
    are tied by `_float64_state`, so functional_call must not tie them again (it refuses two
    values for one tied tensor).
    """
    torch = lazy_import("torch", "torch", "torch")
    state = _float64_state(module)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.no_grad():
            upcast = tuple(t.double() if t.is_floating_point() else t for t in inputs)
            outputs = torch.func.functional_call(module, state, upcast, tie_weights=False)
    finally:
        torch.set_default_dtype(previous)
    try:
        return [t.detach().numpy() for t in flatten_outputs(outputs)]
    except TypeError as error:
        raise UsageError(str(error)) from None


def _compare(backend: str, name: str, actual: np.ndarray, reference: np.ndarray, rtol: float, atol: float) -> OutputCheck:
    check = OutputCheck(backend=backend, output=name, verdict="pass", shape=list(actual.shape))
    if actual.shape != reference.shape:
        check.verdict, check.reason = "shape-mismatch", f"shape {list(actual.shape)}, torch gives {list(reference.shape)}"
        return check
    if not np.isfinite(actual.astype(np.float64)).all():
        check.verdict, check.reason = "nonfinite", f"{int((~np.isfinite(actual.astype(np.float64))).sum())} NaN/Inf outputs"
        return check
    dtype = actual.dtype.name if actual.dtype.name in UNIT_ROUNDOFF else "float32"
    figures = error_figures(actual, reference, dtype)
    check.max_abs_err, check.max_rel_err, check.rel_l2_err = figures.max_abs_err, figures.max_rel_err, figures.rel_l2_err
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    if not check.max_abs_err <= rtol * scale + atol:  # a NaN limit fails rather than passes everything
        check.verdict = "drift"
        check.reason = f"max abs error {check.max_abs_err:.3g} > rtol {rtol:g} x max|ref| {scale:.3g} + atol {atol:g}"
    return check


def _backend_outputs(name: str, case: Case) -> list[np.ndarray] | OutputCheck:
    """One backend's outputs on the whole model (the file, or the torch module for backends that
    run modules), in graph order; or the row that says why it has none."""
    backend = registry.get(name)
    outcome = run_backend(backend, backend.probe(), case, BuildConfig())
    if outcome.status != "ok":
        reason = outcome.reason
        if outcome.status == "unsupported" and case.spec is None and not backend.capabilities.loads_onnx:
            reason = f"{name} verifies single layers only"
        return OutputCheck(name, "*", outcome.status, reason)
    return list(outcome.outputs.values())


def verify_outputs(module, inputs: tuple, model: onnx.ModelProto, backends: list[str], tolerance: tuple[float, float]) -> list[OutputCheck]:
    """Each backend's outputs against torch float64 eager on the same inputs."""
    shapes = [list(t.shape) for t in inputs]
    try:
        reference = float64_outputs(module, inputs)
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - e.g. a forward that casts to float32 itself
        reason = f"torch float64 reference failed: {one_line(error, limit=240)}"
        return [OutputCheck(b, "*", "unverified", reason, input_shapes=shapes) for b in backends]
    feeds = {gi.name: to_numpy(t) for gi, t in zip(graph_inputs(model), inputs)}
    first = next(iter(feeds), "input")
    x = feeds[first] if feeds else np.zeros(0)  # as case_from_model: no spec, so nothing reads it
    case = Case(spec=None, model=model, x=x, w=None, b=None, feeds=feeds, input_name=first, module=module)
    checks: list[OutputCheck] = []
    for backend in backends:
        actual = _backend_outputs(backend, case)
        if isinstance(actual, OutputCheck):
            actual.input_shapes = shapes
            checks.append(actual)
            continue
        names = case.output_names or [f"output_{i}" for i in range(len(actual))]
        for name, got, ref in zip(names, actual, reference):
            check = _compare(backend, name, np.asarray(got), ref, *tolerance)
            check.input_shapes = shapes
            checks.append(check)
    return checks


def _grown(tensor, axis: int, size: int):
    """`tensor` with `axis` resized to `size`: fresh normal values for floats, repeats otherwise."""
    torch = lazy_import("torch", "torch", "torch")
    shape = list(tensor.shape)
    shape[axis] = size
    if tensor.is_floating_point():
        generator = torch.Generator().manual_seed(1)
        return torch.randn(shape, generator=generator).to(tensor.dtype)
    repeats = [1] * tensor.dim()
    repeats[axis] = -(-size // tensor.shape[axis])
    return tensor.repeat(*repeats).narrow(axis, 0, size)


def second_size_inputs(module, inputs: tuple, axes: dict[int, dict[int, str]]) -> tuple[tuple | None, str]:
    """Inputs with every dynamic axis grown (`axes`: input position -> {axis: symbol}), on which the
    eager module runs; or (None, why not).

    Doubling keeps the divisibility U-Nets need (a multiple of 2^depth stays one) and the ratio
    between inputs at different resolutions (a hyperprior's y and z); where the module refuses the
    doubled size, one step more is tried.  Axes that share a symbol have one example size (see
    `dynamic.resolve`), so they grow to one size: the second size stays consistent per symbol.
    """
    torch = lazy_import("torch", "torch", "torch")
    last_error = ""
    for grow in (lambda n: 2 * n, lambda n: n + 1):
        grown = list(inputs)
        for index, named in axes.items():
            for axis in sorted(named):
                grown[index] = _grown(grown[index], axis, grow(int(grown[index].shape[axis])))
        candidate = tuple(grown)
        try:
            with torch.no_grad():
                module(*candidate)
            return candidate, ""
        except Exception as error:  # noqa: BLE001 - the module's own limits decide the size
            last_error = one_line(error, limit=240)
    return None, last_error
