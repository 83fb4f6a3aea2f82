"""Bit-level emulations of how each backend sums, written independently of deploykit.reference.

Each function computes ConvTranspose in one specific order and precision, with plain NumPy
arithmetic in the narrow type.  NumPy adds two float16 (or bfloat16) numbers through float32 and
rounds back, which is the correctly rounded narrow result (float32 has more than 2p + 2 bits).
tests/test_accumulation.py compares each backend's output with its emulation element by element:
that is the measurement behind the accumulation model the backend declares.
"""

from __future__ import annotations

import math

import numpy as np

from deploykit.onnxgen import NUMPY_DTYPES
from deploykit.spec import ConvTransposeSpec


def _tap_products(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per kernel tap and input pixel, the exact (float64) sum over the group's channels."""
    batch, channels, *in_spatial = x.shape
    groups, taps = spec.group, math.prod(spec.kernel_shape)
    per_in, per_out = channels // groups, w.shape[1]
    w_groups = w.astype(np.float64).reshape(groups, per_in, per_out * taps).transpose(0, 2, 1)
    x_groups = x.astype(np.float64).reshape(batch, groups, per_in, -1)
    return np.matmul(w_groups, x_groups).reshape(batch, groups * per_out, taps, *in_spatial)


def _col2im(spec: ConvTransposeSpec, columns: np.ndarray, dtype) -> np.ndarray:
    """Add the taps one by one, in kernel order, into a zeroed buffer of `dtype`; then crop."""
    batch, out_channels, _, *in_spatial = columns.shape
    full = np.zeros((batch, out_channels, *spec.natural_spatial), dtype)
    for tap, offsets in enumerate(np.ndindex(*spec.kernel_shape)):
        window = tuple(
            slice(o * d, o * d + s * (n - 1) + 1, s)
            for o, d, s, n in zip(offsets, spec.dilations, spec.strides, in_spatial)
        )
        full[(slice(None), slice(None), *window)] += columns[:, :, tap]
    begin, end = spec.resolved_pads()
    if min(begin + end) < 0:
        raise ValueError("the emulations cover cropping pads only")
    crop = tuple(slice(b, n - e) for b, e, n in zip(begin, end, spec.natural_spatial))
    return full[(slice(None), slice(None), *crop)]


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


def drop_last_tap(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """`tap_sums` that forgets the last kernel tap: the kind of defect the bound must catch."""
    w = w.copy()
    w[(slice(None), slice(None), *[-1] * spec.rank)] = 0
    return tap_sums(spec, x, w, b)
