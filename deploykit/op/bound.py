"""The rigorous per-element rounding-error bound, for each way a backend may sum.

deploykit does not use hand-tuned atol/rtol.  For every output element it bounds |y - ref| over
every summation order the backend's accumulation model allows, so `bound_ratio <= 1` passes
whatever the dtype or size and anything above it is a real defect rather than noise.  The models
are measured, not assumed: tests/op/test_accumulation.py emulates each backend's order bit for bit
on kernel > stride configs and shows its bound holds with a ratio that is not vacuous.

Notation (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., sections 3.1 and
4.2; gamma_k(u) = k u / (1 - k u)), per output element: A = |W| (*) |X| (the products'
magnitude), B = |bias|, R = |ref|, S = |ref - bias| (the products' sum), T = sum over kernel taps
of |tap sum| (`reference.tap_magnitude`), n = taps that reach the element, K = n * C/group
products that reach the element (a runtime that also multiplies the zeros of a dilated or padded
input adds exact zeros, which round nothing), eta = smallest subnormal, added once per rounding
so results that underflow are never flagged.

- `OneSum(p)`: all K products and the bias summed in p in any order, rounded once to the dtype
  (ORT's MLAS, oneDNN, OpenVINO):  gamma_{K+1}(u_p)(A + B)(1 + u) + u R.
- `SumThenBias(p, t)`: the products summed in p and rounded to t, then the bias added in t
  (OpenVINO when the bias is a graph input: a separate Add):
      E = gamma_K(u_p) A;   ((1 + u_t) E + u_t S)(1 + u_t) + u_t R.
  With `rounded_products` each product is first rounded to t (tinygrad's half and bfloat16
  kernels): E = (u_t + gamma_K(u_p)(1 + u_t)) A + K eta_t.
- `TapSums(p, t)`: GEMM + col2im in a narrow type t: each tap's C/group products summed in p and
  rounded to t; the n taps added one by one in t from zero; then the bias (torch's native CPU
  kernels, onnx.reference):
      S' = gamma_{C/g}(u_p)(1 + u_t)(1 + gamma_{n-1}(u_t)) A + (u_t + gamma_{n-1}(u_t)(1 + u_t)) T
      with a bias: (1 + u_t) S' + u_t R.
  With `bias_first` the bias starts the sum instead (tract): E = gamma_{C/g}(u_p)(1 + u_t) A + u_t T,
      (1 + gamma_m(u_t)) E + gamma_m(u_t)(B + T), m = n with a bias, n - 1 without.
- `operands=i` on any model: X, W and B are first rounded to i (a float32 model built in float16,
  TF32 tensor cores).  The model's bound is taken on the rounded problem, whose magnitudes grow
  to A(1 + gamma_2), B(1 + u_i), T + gamma_2 A, R and S + gamma_2 A, and the rounding of the
  problem itself, gamma_2(u_i) A + u_i B, is added.
- A result rounded to an intermediate precision (`result`, or a narrow `taps`/`bias_in`) and then
  converted to the dtype rounds once more: (1 + u) bound + u R each time.

A backend whose path depends on the machine (torch uses oneDNN on CPUs with AVX512-FP16 and its
native kernels elsewhere) declares several models: the bound is their elementwise maximum.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Sequence, Union

import ml_dtypes
import numpy as np

from deploykit.op.spec import ConvTransposeSpec
from deploykit.vocabulary import NUMPY_DTYPES

if TYPE_CHECKING:
    from deploykit.op.reference import ExactAnswer

UNIT_ROUNDOFF: dict[str, float] = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
    "tfloat32": 2.0**-11,  # TF32 tensor cores round inputs to a 10-bit mantissa, accumulate in float32
}
#: Precisions narrower than float32 that a backend may sum in (TF32 rounds inputs, not sums).
NARROW_SUMS = ("float16", "bfloat16")


def _operands(operands: str | None) -> str:
    return f" of {operands} operands" if operands else ""


@dataclass(frozen=True)
class OneSum:
    """Every product and the bias summed in `precision` (any order), rounded once to the output dtype.

    `operands`: inputs, weights and bias are first rounded to this precision (`tfloat32` on TF32
    tensor cores; float16 or bfloat16 for a reduced build precision).  `result`: the sum is
    rounded to this precision before it is converted to the output dtype.
    """

    precision: str
    operands: str | None = None
    result: str | None = None

    def describe(self) -> str:
        return f"one {self.precision} sum{_operands(self.operands)}" + (f", rounded to {self.result}" if self.result else "")

    @property
    def sums_below_float32(self) -> bool:
        return self.precision in NARROW_SUMS


@dataclass(frozen=True)
class SumThenBias:
    """The products (each rounded to `bias_in` first with `rounded_products`) summed in `precision`
    and rounded to `bias_in`; then the bias added in `bias_in`."""

    precision: str
    bias_in: str
    operands: str | None = None
    #: each product is rounded to `bias_in` before it is summed
    rounded_products: bool = False

    def describe(self) -> str:
        products = f" of products rounded to {self.bias_in}" if self.rounded_products else ""
        return (f"one {self.precision} sum{products}{_operands(self.operands)}, rounded to {self.bias_in},"
                f" bias added in {self.bias_in}")

    @property
    def sums_below_float32(self) -> bool:
        return self.bias_in in NARROW_SUMS


@dataclass(frozen=True)
class TapSums:
    """Per-tap GEMM sums in `products`, rounded to `taps`; taps (and the bias, last or first)
    added one by one in `taps`."""

    products: str
    taps: str
    bias_first: bool = False
    operands: str | None = None

    def describe(self) -> str:
        bias = "bias first" if self.bias_first else "then the bias"
        return f"{self.products} sum per kernel tap{_operands(self.operands)}, taps summed in {self.taps}, {bias}"

    @property
    def sums_below_float32(self) -> bool:
        return self.taps in NARROW_SUMS


Accumulation = Union[OneSum, SumThenBias, TapSums]


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


@dataclass(frozen=True)
class Magnitudes:
    """The per-element magnitudes a bound is built from (see the module docstring)."""

    A: np.ndarray
    B: np.ndarray | float
    R: np.ndarray
    S: Callable[[], np.ndarray]
    T: Callable[[], np.ndarray]
    n: Callable[[], np.ndarray]

    @classmethod
    def of(cls, exact: "ExactAnswer") -> "Magnitudes":
        bias = exact.bias_magnitude
        reference = np.abs(exact.output)
        # |ref - b| from the float64 answer, widened by its own float64 rounding.
        products = lambda: np.abs(exact.output - exact.signed_bias) + 2.0**-52 * (reference + bias)  # noqa: E731
        return cls(exact.product_magnitude, bias, reference, products, lambda: exact.tap_magnitude, lambda: exact.tap_count)

    def rounded_operands(self, u: float) -> tuple["Magnitudes", np.ndarray]:
        """The same problem after X, W and B are rounded to unit roundoff u, and that rounding's error."""
        g = gamma(2, u)
        grown = replace(
            self,
            A=(1 + g) * self.A,
            B=(1 + u) * self.B,
            R=self.R + g * self.A + u * self.B,
            S=lambda: self.S() + g * self.A,
            T=lambda: self.T() + g * self.A,
        )
        return grown, g * self.A + u * self.B


def error_bound(spec: ConvTransposeSpec, exact: "ExactAnswer", models: Sequence[Accumulation]) -> np.ndarray:
    """Per-element bound on |y - ref|: the largest over the summation models the backend may use."""
    if not models:
        raise ValueError("a backend must declare at least one accumulation model")
    magnitudes = Magnitudes.of(exact)
    return functools.reduce(np.maximum, [model_bound(spec, magnitudes, m) for m in models])


def model_bound(spec: ConvTransposeSpec, m: Magnitudes, model: Accumulation) -> np.ndarray:
    """One model's bound; operand rounding wraps whichever order the model sums in."""
    problem = np.zeros(())
    if model.operands:
        m, problem = m.rounded_operands(UNIT_ROUNDOFF[model.operands])
    # Callable[..., ...]: each bound takes its own model class, which the lookup by type(model) matches.
    bounds: dict[type, Callable[..., np.ndarray]] = {OneSum: _one_sum_bound, SumThenBias: _sum_then_bias_bound, TapSums: _tap_sums_bound}
    return bounds[type(model)](spec, m, model) + problem


def _roundings(bound: np.ndarray, m: Magnitudes, precisions: list[str]) -> np.ndarray:
    """Each rounding of the result (to an intermediate precision, then to the output dtype) adds
    u * |result|, with |result| <= |ref| + the error so far, and one subnormal."""
    for precision in precisions:
        u = UNIT_ROUNDOFF[precision]
        bound = (1 + u) * bound + u * m.R + smallest_subnormal(precision)
    return bound


def _then_dtype(spec: ConvTransposeSpec, last: str | None) -> list[str]:
    """The output dtype's rounding, after `last` where the result was first rounded to it."""
    return [last, spec.dtype] if last and last != spec.dtype else [spec.dtype]


def products_reaching(spec: ConvTransposeSpec, m: Magnitudes) -> np.ndarray:
    """K per output element: the products that really reach it, n taps x C/group channels.

    A global C/group * prod(kernel) would charge every element for taps that never reach it (a
    stride above 1 leaves most taps out); the zeros a runtime multiplies instead are exact."""
    return m.n() * (spec.in_channels // max(spec.group, 1))


def _one_sum_bound(spec: ConvTransposeSpec, m: Magnitudes, model: OneSum) -> np.ndarray:
    terms = products_reaching(spec, m) + (1 if spec.bias else 0)
    summed = _gamma_array(terms, UNIT_ROUNDOFF[model.precision]) * (m.A + m.B)
    return _roundings(summed, m, _then_dtype(spec, model.result))


def _sum_then_bias_bound(spec: ConvTransposeSpec, m: Magnitudes, model: SumThenBias) -> np.ndarray:
    u_t = UNIT_ROUNDOFF[model.bias_in]
    products = products_reaching(spec, m)
    summed = _gamma_array(products, UNIT_ROUNDOFF[model.precision]) * m.A
    if model.rounded_products:  # each product rounded to t first (and may underflow there)
        summed = u_t * m.A + (1 + u_t) * summed + products * smallest_subnormal(model.bias_in)
    if not spec.bias:
        return _roundings(summed, m, _then_dtype(spec, model.bias_in))
    rounded = (1 + u_t) * summed + u_t * m.S() + smallest_subnormal(model.bias_in)  # the products' sum, in t
    return _roundings(rounded, m, _then_dtype(spec, model.bias_in))  # + bias in t, then to the dtype


def _tap_sums_bound(spec: ConvTransposeSpec, m: Magnitudes, model: TapSums) -> np.ndarray:
    u_t = UNIT_ROUNDOFF[model.taps]
    taps = m.n()
    per_tap = gamma(spec.in_channels // spec.group, UNIT_ROUNDOFF[model.products])
    subnormals = (taps + 1) * smallest_subnormal(model.taps)
    if model.bias_first:
        additions = _gamma_array(taps if spec.bias else taps - 1, u_t)
        rounded_taps = per_tap * (1 + u_t) * m.A + u_t * m.T()
        bound = (1 + additions) * rounded_taps + additions * (m.B + m.T()) + subnormals
        return _roundings(bound, m, [spec.dtype]) if model.taps != spec.dtype else bound
    between_taps = _gamma_array(taps - 1, u_t)
    bound = per_tap * (1 + u_t) * (1 + between_taps) * m.A + (u_t + between_taps * (1 + u_t)) * m.T() + subnormals
    if spec.bias:  # the bias is added in the taps' precision: one more rounding
        bound = _roundings(bound, m, [model.taps])
    return _roundings(bound, m, [spec.dtype]) if model.taps != spec.dtype else bound
