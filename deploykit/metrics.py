"""Drift metrics and the verdict for one (config, backend) result.

The pass criterion is a rigorous rounding-error bound rather than hand-tuned atol/rtol.  For a
sum of K products computed in a precision with unit roundoff u_acc (Higham, "Accuracy and
Stability of Numerical Algorithms", eq. 3.5), and a final rounding to the output dtype u_out:

    |y - ref| <= gamma_K(u_acc) * (|W| (*) |X| + |B|) * (1 + u_out) + u_out * |ref| + eta_out / 2

with gamma_K(u) = K u / (1 - K u), (*) the same ConvTranspose on absolute values, and eta_out the
smallest subnormal of the output dtype (so results that underflow are not flagged; the code adds
the whole eta_out, since eta/2 is not representable in float64 and a zero bound would hide errors).  A backend
that rounds the convolution to the output dtype before adding the bias declares it, and gets
u_out * (|W| (*) |X|) more: that double rounding is legitimate, only less accurate.  Any correct
summation order satisfies it, so `bound_ratio <= 1` is a pass whatever the dtype or size, and
anything above it is a real defect rather than noise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import ml_dtypes
import numpy as np

from deploykit.onnxgen import NUMPY_DTYPES
from deploykit.spec import ConvTransposeSpec

# Verdicts and what each means; the README and the report both read this table.
VERDICTS: dict[str, str] = {
    "pass": "within the rounding-error bound (or correctly refused a spec-invalid model)",
    "drift": "ran, right shape, but some element is beyond the rounding-error bound",
    "shape-mismatch": "output shape differs from the ONNX spec text",
    "rejected": "refused a spec-valid model (load or run error)",
    "accepted-invalid": "ran a model that breaks the ONNX spec instead of refusing it",
    "nonfinite": "NaN or Inf where the reference is finite",
    "crash": "the worker process died (segfault, abort) on this config",
    "timeout": "the backend exceeded the per-config time limit",
    "unsupported": "documented non-support by the backend (e.g. a dtype it has no kernel for)",
    "unavailable": "the backend's package or hardware is missing on this machine",
}
PASSING = ("pass",)
SKIPPED = ("unsupported", "unavailable")

UNIT_ROUNDOFF: dict[str, float] = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
    "tfloat32": 2.0**-11,  # TF32 tensor cores round inputs to a 10-bit mantissa, accumulate in float32
}


def smallest_subnormal(dtype: str) -> float:
    info = ml_dtypes.finfo(NUMPY_DTYPES[dtype]) if dtype == "bfloat16" else np.finfo(NUMPY_DTYPES[dtype])
    return float(info.smallest_subnormal)


def gamma(k: int, u: float) -> float:
    """Higham's gamma_k = k u / (1 - k u), the relative bound of a k-term dot product."""
    ku = k * u
    if ku >= 1:
        return math.inf
    return ku / (1 - ku)


def error_bound(
    spec: ConvTransposeSpec,
    magnitude: np.ndarray,
    reference: np.ndarray,
    accumulate: str,
    rounds_before_bias: bool = False,
) -> np.ndarray:
    """Per-element bound on |y - ref| for a backend accumulating in `accumulate`.

    `rounds_before_bias`: the backend rounds the convolution to the output dtype and then adds
    the bias in that dtype (a second rounding), which adds u_out * (|W| (*) |X|) <= u_out * magnitude.
    """
    terms = spec.products_per_output + (1 if spec.bias else 0)
    u_out = UNIT_ROUNDOFF[spec.dtype]
    if accumulate == "tfloat32":
        # Each product's two inputs are rounded to TF32 (gamma_2), the sum runs in float32.
        relative = gamma(2, UNIT_ROUNDOFF["tfloat32"]) + gamma(terms, UNIT_ROUNDOFF["float32"])
    else:
        relative = gamma(terms, UNIT_ROUNDOFF[accumulate])
    bound = (
        relative * magnitude * (1 + u_out)
        + u_out * np.abs(reference)
        + smallest_subnormal(spec.dtype)  # (eta/2 would round to 0 in float64)
    )
    if rounds_before_bias and spec.bias and spec.dtype != accumulate:
        bound = bound + u_out * magnitude
    return bound


@dataclass
class Drift:
    max_abs_err: float
    max_rel_err: float
    rel_l2_err: float
    max_ulp_err: int
    bound_ratio: float
    worst_index: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ordered_ints(values: np.ndarray) -> np.ndarray:
    """Map floats to integers whose difference counts representable values (ulps) between them."""
    width = values.dtype.itemsize
    signed = {2: np.int16, 4: np.int32, 8: np.int64}[width]
    bits = values.view(signed).astype(np.int64)
    magnitude_bits = bits & ((1 << (8 * width - 1)) - 1)
    return np.where(bits < 0, -magnitude_bits, magnitude_bits)


def ulp_distance(actual: np.ndarray, reference: np.ndarray, dtype: str) -> int:
    """Largest ulp distance between `actual` and the reference rounded to `dtype`."""
    np_dtype = NUMPY_DTYPES[dtype]
    a = _ordered_ints(np.ascontiguousarray(actual.astype(np_dtype)))
    r = _ordered_ints(np.ascontiguousarray(reference.astype(np_dtype)))
    if a.size == 0:
        return 0
    # |a - r| can exceed int64 for float64 (e.g. -2.0 vs 2.0): subtract in uint64, where the
    # wrap-around of the larger minus the smaller is exact.
    ua, ur = a.view(np.uint64), r.view(np.uint64)
    distance = np.where(a >= r, ua - ur, ur - ua)
    return int(distance.max())


def measure(actual: np.ndarray, reference: np.ndarray, bound: np.ndarray, dtype: str) -> Drift:
    """All drift figures for same-shaped, finite `actual` and float64 `reference`."""
    y = actual.astype(np.float64)
    diff = np.abs(y - reference)
    if diff.size == 0:
        return Drift(0.0, 0.0, 0.0, 0, 0.0, ())
    # Guard the relative error's denominator: elements that cancel to ~0 would otherwise report
    # huge relative errors for harmless absolute ones.  Floor = eps(dtype) * max|ref|.
    scale = float(np.max(np.abs(reference)))
    floor = max(UNIT_ROUNDOFF[dtype] * 2 * scale, np.finfo(np.float64).tiny)
    rel = diff / np.maximum(np.abs(reference), floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bound > 0, diff / bound, np.where(diff > 0, np.inf, 0.0))
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    norm = float(np.linalg.norm(reference))
    return Drift(
        max_abs_err=float(diff.max()),
        max_rel_err=float(rel.max()),
        rel_l2_err=float(np.linalg.norm(y - reference) / norm) if norm else float(np.linalg.norm(y)),
        max_ulp_err=ulp_distance(actual, reference, dtype),
        bound_ratio=float(ratio.max()),
        worst_index=tuple(int(i) for i in worst),
    )


@dataclass(frozen=True)
class Tolerance:
    """A user's --atol/--rtol override: pass iff |y - ref| <= atol + rtol * |ref| everywhere."""

    atol: float = 0.0
    rtol: float = 0.0


def judge_output(
    spec: ConvTransposeSpec,
    actual: np.ndarray,
    reference: np.ndarray,
    magnitude: np.ndarray,
    accumulate: str,
    tolerance: Tolerance | None = None,
    rounds_before_bias: bool = False,
) -> tuple[str, str, Drift | None]:
    """Verdict, one-line reason and drift figures for an output a backend produced."""
    expected_shape = tuple(spec.output_full_shape)
    if tuple(actual.shape) != expected_shape:
        return (
            "shape-mismatch",
            f"output shape {list(actual.shape)}, the ONNX spec text gives {list(expected_shape)}",
            None,
        )
    y = actual.astype(np.float64)
    bad = ~np.isfinite(y) & np.isfinite(reference)
    if bad.any():
        return "nonfinite", f"{int(bad.sum())} of {y.size} outputs are NaN/Inf where the reference is finite", None
    bound = error_bound(spec, magnitude, reference, accumulate, rounds_before_bias)
    drift = measure(actual, reference, bound, spec.dtype)
    if tolerance is not None:
        limit = tolerance.atol + tolerance.rtol * np.abs(reference)
        over = np.abs(y - reference) > limit
        if over.any():
            return (
                "drift",
                f"{int(over.sum())} of {y.size} outputs exceed atol={tolerance.atol:g} rtol={tolerance.rtol:g}"
                f" (max abs error {drift.max_abs_err:.3g})",
                drift,
            )
        return "pass", f"within atol={tolerance.atol:g} rtol={tolerance.rtol:g}", drift
    if drift.bound_ratio > 1.0:
        return (
            "drift",
            f"max error {drift.max_abs_err:.3g} is {drift.bound_ratio:.3g}x the rounding-error bound"
            f" at output index {list(drift.worst_index)} (accumulation assumed {accumulate})",
            drift,
        )
    return "pass", "", drift
