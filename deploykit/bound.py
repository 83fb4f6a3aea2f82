"""The rigorous per-element rounding-error bound, for each way a backend may sum.

deploykit does not use hand-tuned atol/rtol.  For every output element it bounds |y - ref| over
every summation order the backend's accumulation model allows, so `bound_ratio <= 1` passes
whatever the dtype or size and anything above it is a real defect rather than noise.  The models
are measured, not assumed: tests/test_accumulation.py emulates each backend's order bit for bit
on kernel > stride configs and shows its bound holds with a ratio that is not vacuous.

Two models cover the CPU runtimes measured so far (Higham, "Accuracy and Stability of Numerical
Algorithms", 2nd ed., sections 3.1 and 4.2; gamma_k(u) = k u / (1 - k u)):

- `OneSum(p)`: all K = C/group * prod(kernel) products and the bias summed in precision p in any
  order, then rounded once to the output dtype (ORT's MLAS, oneDNN):
      |y - ref| <= gamma_K(u_p) (|W| (*) |X| + |B|) (1 + u_out) + u_out |ref| + eta_out
- `TapSums(p, t)`: GEMM + col2im in a narrow type (torch's native CPU kernels, onnx.reference).
  Each kernel tap's C/group products are summed in p and rounded to t; col2im adds the n taps
  that reach an output one by one in t starting from zero; then the bias is added in t.  With
  A = |W| (*) |X| and T = sum over taps of |tap sum| (`reference.tap_magnitude`):
      S = gamma_{C/g}(u_p)(1 + u_t)(1 + gamma_{n-1}(u_t)) A + (u_t + gamma_{n-1}(u_t)(1 + u_t)) T
      with a bias:  (1 + u_t) S + u_t |ref|
  (per tap: the GEMM error plus one rounding; then recursive summation of n rounded terms; then
  one rounding of the bias addition).

eta is the smallest subnormal of the dtype that rounds, added once per rounding, so results that
underflow are never flagged (eta/2 is not representable in float64, and a zero bound would hide
errors).  A backend whose path depends on the machine (torch uses oneDNN on CPUs with
AVX512-FP16 and its native kernels elsewhere) declares both models: the bound is their
elementwise maximum.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

import ml_dtypes
import numpy as np

from deploykit.onnxgen import NUMPY_DTYPES
from deploykit.spec import ConvTransposeSpec

if TYPE_CHECKING:
    from deploykit.reference import ExactAnswer

UNIT_ROUNDOFF: dict[str, float] = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
    "tfloat32": 2.0**-11,  # TF32 tensor cores round inputs to a 10-bit mantissa, accumulate in float32
}
#: Precisions narrower than float32 that a backend may sum in (TF32 rounds inputs, not sums).
NARROW_SUMS = ("float16", "bfloat16")


@dataclass(frozen=True)
class OneSum:
    """Every product and the bias summed in `precision` (any order), rounded once to the output dtype.

    `operands`: inputs, weights and bias are first rounded to this precision (TF32 tensor cores
    round to `tfloat32`; a reduced build precision to float16 or bfloat16), which costs
    gamma_2(u) per product.  `result`: the sum is rounded to this precision before it is converted
    to the output dtype (a float32 model run in float16 returns float16 numbers).
    """

    precision: str
    operands: str | None = None
    result: str | None = None

    def describe(self) -> str:
        text = f"one {self.precision} sum"
        if self.operands:
            text += f" of {self.operands} operands"
        return text + (f", rounded to {self.result}" if self.result else "")

    @property
    def sums_below_float32(self) -> bool:
        return self.precision in NARROW_SUMS


@dataclass(frozen=True)
class TapSums:
    """Per-tap GEMM sums in `products`, rounded to `taps`; taps then bias added one by one in `taps`."""

    products: str
    taps: str

    def describe(self) -> str:
        return f"{self.products} sum per kernel tap, taps summed in {self.taps}"

    @property
    def sums_below_float32(self) -> bool:
        return self.taps in NARROW_SUMS


Accumulation = Union[OneSum, TapSums]


def describe(models: Sequence[Accumulation]) -> str:
    """One line for reports, e.g. 'one float32 sum | float32 sum per kernel tap, taps summed in float16'."""
    return " | ".join(model.describe() for model in models)


def smallest_subnormal(dtype: str) -> float:
    info = ml_dtypes.finfo(NUMPY_DTYPES[dtype]) if dtype == "bfloat16" else np.finfo(NUMPY_DTYPES[dtype])
    return float(info.smallest_subnormal)


def gamma(k: int, u: float) -> float:
    """Higham's gamma_k = k u / (1 - k u), the relative bound of a k-term dot product."""
    ku = k * u
    if ku >= 1:
        return math.inf
    return ku / (1 - ku)


def _gamma_array(k: np.ndarray, u: float) -> np.ndarray:
    """gamma_k elementwise; k <= 0 gives 0 (nothing summed, nothing rounded)."""
    ku = np.maximum(k, 0) * u
    with np.errstate(divide="ignore"):
        return np.where(ku < 1, ku / (1 - ku), np.inf)


def error_bound(spec: ConvTransposeSpec, exact: "ExactAnswer", models: Sequence[Accumulation]) -> np.ndarray:
    """Per-element bound on |y - ref|: the largest over the summation models the backend may use."""
    if not models:
        raise ValueError("a backend must declare at least one accumulation model")
    bounds = [_tap_sums_bound(spec, exact, m) if isinstance(m, TapSums) else _one_sum_bound(spec, exact, m) for m in models]
    return functools.reduce(np.maximum, bounds)


def _final_roundings(bound: np.ndarray, exact: "ExactAnswer", precisions: list[str]) -> np.ndarray:
    """Each rounding of the result (to an intermediate precision, then to the output dtype) adds
    u * |result|, with |result| <= |ref| + the error so far."""
    for precision in precisions:
        u = UNIT_ROUNDOFF[precision]
        bound = (1 + u) * bound + u * np.abs(exact.output)
    return bound


def _roundings(spec: ConvTransposeSpec, last: str | None) -> list[str]:
    return [last, spec.dtype] if last and last != spec.dtype else [spec.dtype]


def _one_sum_bound(spec: ConvTransposeSpec, exact: "ExactAnswer", model: OneSum) -> np.ndarray:
    terms = spec.products_per_output + (1 if spec.bias else 0)
    relative = gamma(terms, UNIT_ROUNDOFF[model.precision])
    if model.operands:  # both factors of each product rounded: gamma_2; the bias rounded: u <= gamma_2
        rounded = gamma(2, UNIT_ROUNDOFF[model.operands])
        relative = rounded + relative * (1 + rounded)
    roundings = _roundings(spec, model.result)
    subnormal = max(smallest_subnormal(p) for p in roundings)
    return _final_roundings(relative * exact.magnitude, exact, roundings) + len(roundings) * subnormal


def _tap_sums_bound(spec: ConvTransposeSpec, exact: "ExactAnswer", model: TapSums) -> np.ndarray:
    u_t = UNIT_ROUNDOFF[model.taps]
    taps = exact.tap_count
    per_tap = gamma(spec.in_channels // spec.group, UNIT_ROUNDOFF[model.products])
    between_taps = _gamma_array(taps - 1, u_t)
    bound = (
        per_tap * (1 + u_t) * (1 + between_taps) * exact.product_magnitude
        + (u_t + between_taps * (1 + u_t)) * exact.tap_magnitude
    )
    if spec.bias:  # the bias is added in the taps' precision: one more rounding
        bound = _final_roundings(bound, exact, [model.taps])
    if model.taps != spec.dtype:  # a final conversion to the output dtype rounds once more
        bound = _final_roundings(bound, exact, [spec.dtype])
    roundings = taps + 3  # one per tap, the bias, the conversion
    return bound + roundings * max(smallest_subnormal(model.taps), smallest_subnormal(spec.dtype))
