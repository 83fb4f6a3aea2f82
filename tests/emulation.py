"""Bit-level emulations of how each backend sums, written independently of deploykit.op.reference.

Each function computes ConvTranspose in one specific order and precision, with plain NumPy
arithmetic in the narrow type.  NumPy adds two float16 (or bfloat16) numbers through float32 and
rounds back, which is the correctly rounded narrow result (float32 has more than 2p + 2 bits).
tests/op/test_accumulation.py compares each backend's output with its emulation element by element:
that is the measurement behind the accumulation model the backend declares.
"""

from __future__ import annotations

import math

import numpy as np

from deploykit.onnxio.write import NUMPY_DTYPES
from deploykit.op.spec import ConvTransposeSpec


def _tap_products(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per kernel tap and input pixel, the exact (float64) sum over the group's channels."""
    batch, channels, *in_spatial = x.shape
    groups, taps = spec.group, math.prod(spec.kernel_shape)
    per_in, per_out = channels // groups, w.shape[1]
    w_groups = w.astype(np.float64).reshape(groups, per_in, per_out * taps).transpose(0, 2, 1)
    x_groups = x.astype(np.float64).reshape(batch, groups, per_in, -1)
    return np.matmul(w_groups, x_groups).reshape(batch, groups * per_out, taps, *in_spatial)


def _col2im(spec: ConvTransposeSpec, columns: np.ndarray, dtype, start=None) -> np.ndarray:
    """Add the taps one by one, in kernel order, into a buffer of `dtype` holding `start` (zero by
    default, the bias for a bias-first order); then crop."""
    batch, out_channels, _, *in_spatial = columns.shape
    full = np.zeros((batch, out_channels, *spec.natural_spatial), dtype)
    if start is not None:
        full += start
    for tap, offsets in enumerate(np.ndindex(*spec.kernel_shape)):
        window = tuple(
            slice(o * d, o * d + s * (n - 1) + 1, s)
            for o, d, s, n in zip(offsets, spec.dilations, spec.strides, in_spatial)
        )
        full[(slice(None), slice(None), *window)] += columns[:, :, tap]
    return _crop(spec, full)


def _bias(spec: ConvTransposeSpec, b: np.ndarray, dtype) -> np.ndarray:
    return b.astype(dtype).reshape(1, -1, *([1] * spec.rank))


def one_float32_sum(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """Everything summed in float32 (GEMM, taps, bias), rounded once to the output dtype."""
    columns = _tap_products(spec, x, w).astype(np.float32)
    y = _col2im(spec, columns, np.float32)
    if b is not None:
        y = y + _bias(spec, b, np.float32)
    return y.astype(NUMPY_DTYPES[spec.dtype])


def tap_sums(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """A float32 GEMM per tap rounded to the dtype, taps added in the dtype, then the bias in the dtype."""
    dtype = NUMPY_DTYPES[spec.dtype]
    columns = _tap_products(spec, x, w).astype(np.float32).astype(dtype)
    y = _col2im(spec, columns, dtype)
    if b is not None:
        y = y + _bias(spec, b, dtype)
    return y


def tap_sums_bias_first(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                        narrow=None) -> np.ndarray:
    """As `tap_sums`, but the bias starts each sum and the taps are added to it (tract)."""
    dtype = narrow or NUMPY_DTYPES[spec.dtype]
    columns = _tap_products(spec, x, w).astype(np.float32).astype(dtype)
    return _col2im(spec, columns, dtype, None if b is None else _bias(spec, b, dtype))


def sum_then_bias(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """The products summed in float32 and rounded to the dtype; then the bias added in the dtype
    (a separate Add, as OpenVINO runs a bias given as a graph input)."""
    dtype = NUMPY_DTYPES[spec.dtype]
    y = _col2im(spec, _tap_products(spec, x, w).astype(np.float32), np.float32).astype(dtype)
    return y if b is None else y + _bias(spec, b, dtype)


def _products(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray, taps_reversed: bool):
    """Each (input channel of the group, kernel tap) in turn, channels outer: the exact products
    x[c] * w[c, :, tap] (float32 holds the product of two float16 or bfloat16 numbers exactly),
    placed in the natural output, zero where that tap does not reach."""
    batch, channels, *in_spatial = x.shape
    per_in, per_out = channels // spec.group, w.shape[1]
    taps = list(np.ndindex(*spec.kernel_shape))
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    for channel in range(per_in):
        for offsets in taps[::-1] if taps_reversed else taps:
            term = np.zeros((batch, spec.group * per_out, *spec.natural_spatial), np.float32)
            window = tuple(
                slice(o * d, o * d + s * (n - 1) + 1, s)
                for o, d, s, n in zip(offsets, spec.dilations, spec.strides, in_spatial)
            )
            for group in range(spec.group):
                source = group * per_in + channel
                weights = w32[source][(slice(None), *offsets)].reshape(1, per_out, *[1] * spec.rank)
                outputs = slice(group * per_out, (group + 1) * per_out)
                term[(slice(None), outputs, *window)] = x32[:, source][:, None] * weights
            yield term


def _crop(spec: ConvTransposeSpec, full: np.ndarray) -> np.ndarray:
    begin, end = spec.resolved_pads()
    if min(begin + end) < 0:
        raise ValueError("the emulations cover cropping pads only")
    crop = tuple(slice(b, n - e) for b, e, n in zip(begin, end, spec.natural_spatial))
    return full[(slice(None), slice(None), *crop)]


def running_sum_in_dtype(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                         round_products: bool = True) -> np.ndarray:
    """TVM's topi loops: one accumulator in the dtype; for each input channel, each kernel tap
    (reversed: topi flips the kernel) acc = dtype(acc + product), the product first rounded to
    the dtype (float16) or exact (bfloat16, which TVM computes in float32 and rounds per add);
    then the bias added in the dtype."""
    dtype = NUMPY_DTYPES[spec.dtype]
    total = np.zeros((x.shape[0], w.shape[1] * spec.group, *spec.natural_spatial), dtype)
    for term in _products(spec, x, w, taps_reversed=True):
        addend = term.astype(dtype).astype(np.float32) if round_products else term
        total = (total.astype(np.float32) + addend).astype(dtype)
    y = _crop(spec, total)
    return y if b is None else y + _bias(spec, b, dtype)


def running_sum_of_exact_products(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray,
                                  b: np.ndarray | None) -> np.ndarray:
    """`running_sum_in_dtype` with exact (float32) products: TVM's bfloat16."""
    return running_sum_in_dtype(spec, x, w, b, round_products=False)


def sum_of_rounded_products_then_bias(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray,
                                      b: np.ndarray | None) -> np.ndarray:
    """tinygrad: every product rounded to the dtype, summed in float32 (modelled as one exact sum
    rounded to float32), that sum rounded to the dtype, then the bias added in the dtype."""
    dtype = NUMPY_DTYPES[spec.dtype]
    total = np.zeros((x.shape[0], w.shape[1] * spec.group, *spec.natural_spatial), np.float64)
    for term in _products(spec, x, w, taps_reversed=False):
        total += term.astype(dtype).astype(np.float64)
    y = _crop(spec, total).astype(np.float32).astype(dtype)
    return y if b is None else y + _bias(spec, b, dtype)


def lowered(emulate, narrow):
    """`emulate` run on X, W and B rounded to `narrow`, its result returned in the model's dtype:
    a float32 model built in float16 (OpenVINO's f16 hint, tract's FloatPrecision)."""

    def run(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        narrow_spec = spec.replace(dtype=np.dtype(narrow).name)
        rounded = [None if a is None else a.astype(narrow) for a in (x, w, b)]
        return emulate(narrow_spec, *rounded).astype(NUMPY_DTYPES[spec.dtype])

    run.__name__ = f"{emulate.__name__}_lowered_to_{np.dtype(narrow).name}"
    return run


def drop_last_tap(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """`tap_sums` that forgets the last kernel tap: the kind of defect the bound must catch."""
    w = w.copy()
    w[(slice(None), slice(None), *[-1] * spec.rank)] = 0
    return tap_sums(spec, x, w, b)
