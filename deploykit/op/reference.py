"""The float64 oracle for ONNX ConvTranspose, in plain NumPy.

Independent of `onnx.reference` and torch on purpose: both are backends under test here.  The
algorithm is the textbook one, chosen for speed without a Python loop over pixels:
one batched GEMM covering every group (W_g^T @ X_g gives one column per kernel tap and input
pixel), then a col2im scatter with one strided add per kernel tap, then the crop (or zero
extension) that the resolved pads ask for.  The same operator on |x|, |w|, |b| gives the
magnitude term of the rounding-error bound, which is why `magnitude` is public.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

from deploykit.op.spec import AUTO_PADS, ConvTransposeSpec, natural_size, resolve_pads


def conv_transpose(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    output_padding: Sequence[int] | None = None,
    group: int = 1,
    auto_pad: str = "NOTSET",
    output_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """ConvTranspose per the ONNX text, computed in float64.

    x: [N, C, *spatial]; w: [C, M/group, *kernel]; b: [M] or None.  Attributes take ONNX
    defaults when None.  `output_shape` is spatial only.  Returns a float64 array.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if x.ndim < 3 or w.ndim != x.ndim:
        raise ValueError(f"x has rank {x.ndim} and w rank {w.ndim}; both must be [N|C, C|M/g, *spatial]")
    batch, channels, *in_spatial = x.shape
    rank = len(in_spatial)
    kernel = list(w.shape[2:])
    if w.shape[0] != channels:
        raise ValueError(f"w has {w.shape[0]} input channels, x has {channels}")
    if channels % group:
        raise ValueError(f"group={group} does not divide in_channels={channels}")
    strides = list(strides) if strides is not None else [1] * rank
    dilations = list(dilations) if dilations is not None else [1] * rank
    output_padding = list(output_padding) if output_padding is not None else [0] * rank
    pads = list(pads) if pads is not None else [0] * (2 * rank)
    _check_lengths(rank, strides=strides, dilations=dilations, output_padding=output_padding)
    _check_lengths(2 * rank, pads=pads)
    if output_shape is not None:
        _check_lengths(rank, output_shape=output_shape)
    if auto_pad not in AUTO_PADS:
        raise ValueError(f"auto_pad {auto_pad!r} is not one of {', '.join(AUTO_PADS)}")
    begin, end = resolve_pads(
        in_spatial, kernel, strides, dilations, output_padding, pads, auto_pad, output_shape
    )

    natural = natural_size(in_spatial, kernel, strides, dilations, output_padding)
    sizes = [n - b_ - e_ for n, b_, e_ in zip(natural, begin, end)]
    if min(sizes) < 1:
        raise ValueError(f"output spatial size {sizes} has an axis below 1")
    full = _scatter_taps(_tap_columns(x, w, group), kernel, strides, dilations, output_padding)
    out = _crop_or_extend(full, begin, end)
    if b is not None:
        out += np.asarray(b, dtype=np.float64).reshape(1, out.shape[1], *([1] * rank))
    return out


def _tap_columns(x: np.ndarray, w: np.ndarray, group: int) -> np.ndarray:
    """W_g^T @ X_g for every group in one batched GEMM: [N, M, taps, *in_spatial].

    Entry [n, m, t, p] is the sum over the group's input channels of w * x for kernel tap t and
    input pixel p: the partial sum a GEMM + col2im runtime computes before it adds taps together.
    """
    batch, channels, *in_spatial = x.shape
    per_group_in = channels // group
    per_group_out = w.shape[1]
    taps = math.prod(w.shape[2:])
    w_groups = w.reshape(group, per_group_in, per_group_out * taps).transpose(0, 2, 1)
    x_groups = x.reshape(batch, group, per_group_in, math.prod(in_spatial))
    # (G, Mg*K, Cg) @ (N, G, Cg, P) -> (N, G, Mg*K, P)
    return np.matmul(w_groups, x_groups).reshape(batch, per_group_out * group, taps, *in_spatial)


def _scatter_taps(
    columns: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    output_padding: Sequence[int],
) -> np.ndarray:
    """col2im: add each tap's columns into the natural (uncropped) output, one strided add per tap."""
    batch, out_channels, _, *in_spatial = columns.shape
    natural = natural_size(in_spatial, kernel, strides, dilations, output_padding)
    full = np.zeros((batch, out_channels, *natural), dtype=np.float64)
    for tap, offsets in enumerate(np.ndindex(*kernel)):
        window = tuple(
            slice(o * d, o * d + s * (n - 1) + 1, s)
            for o, d, s, n in zip(offsets, dilations, strides, in_spatial)
        )
        full[(slice(None), slice(None)) + window] += columns[:, :, tap]
    return full


def _check_lengths(expected: int, **attributes: Sequence[int]) -> None:
    for name, values in attributes.items():
        if len(values) != expected:
            raise ValueError(f"{name} has {len(values)} values, expected {expected} for this input rank")


def _crop_or_extend(full: np.ndarray, begin: Sequence[int], end: Sequence[int]) -> np.ndarray:
    """Apply resolved pads: positive pads crop, negative pads add zeros on that side."""
    extend = [(0, 0), (0, 0)] + [(max(0, -b), max(0, -e)) for b, e in zip(begin, end)]
    if any(lo or hi for lo, hi in extend):
        full = np.pad(full, extend)
    window = tuple(
        slice(max(0, b), full.shape[2 + i] - max(0, e)) for i, (b, e) in enumerate(zip(begin, end))
    )
    return np.ascontiguousarray(full[(slice(None), slice(None)) + window])


def attributes(spec: ConvTransposeSpec) -> dict:
    """The keyword arguments of `conv_transpose` for a spec."""
    return {
        "strides": spec.strides,
        "pads": spec.pads,
        "dilations": spec.dilations,
        "output_padding": spec.output_padding,
        "group": spec.group,
        "auto_pad": spec.auto_pad,
        "output_shape": spec.output_shape,
    }


def run_spec(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """The exact (float64) answer for a spec's inputs."""
    return conv_transpose(x, w, b, **attributes(spec))


def magnitude(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """|W| (*) |X| + |B|: the same operator on absolute values, for the rounding-error bound."""
    return conv_transpose(
        np.abs(np.asarray(x, dtype=np.float64)),
        np.abs(np.asarray(w, dtype=np.float64)),
        None if b is None else np.abs(np.asarray(b, dtype=np.float64)),
        **attributes(spec),
    )


def tap_magnitude(spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Sum over kernel taps of |sum over channels of w * x|, cropped like the output.

    A runtime that rounds each tap's partial sum before adding the taps (GEMM + col2im in the
    output dtype) makes rounding errors proportional to these partial sums, not to |W| (*) |X|,
    which cancellation inside a tap can make much larger.
    """
    columns = np.abs(_tap_columns(np.asarray(x, np.float64), np.asarray(w, np.float64), spec.group))
    full = _scatter_taps(columns, spec.kernel_shape, spec.strides, spec.dilations, spec.output_padding)
    return _crop_or_extend(full, *spec.resolved_pads())


def tap_count(spec: ConvTransposeSpec) -> np.ndarray:
    """How many kernel taps col2im adds into each output position: [1, 1, *output_spatial].

    Positions that no tap reaches (a kernel extent below the stride, zero extension) get 0.
    """
    ones = np.ones((1, 1, math.prod(spec.kernel_shape), *spec.in_spatial))
    full = _scatter_taps(ones, spec.kernel_shape, spec.strides, spec.dilations, spec.output_padding)
    return _crop_or_extend(full, *spec.resolved_pads())


class ExactAnswer:
    """The float64 output of one case and the magnitudes its rounding-error bound is built from.

    `output` and `magnitude` are computed at once; the per-tap statistics only when a backend's
    accumulation model needs them (see deploykit.op.bound), since they cost another GEMM.
    """

    def __init__(self, spec: ConvTransposeSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> None:
        self.spec = spec
        self._x, self._w, self._b = x, w, b
        self.output = run_spec(spec, x, w, b)
        #: |W| (*) |X| without the bias: the products' share of the bound
        self.product_magnitude = magnitude(spec, x, w, None)
        #: B broadcast over the output (0 without a bias), and |B|
        self.signed_bias = 0.0 if b is None else np.asarray(b, np.float64).reshape(1, -1, *([1] * spec.rank))
        self.bias_magnitude = np.abs(self.signed_bias)
        #: |W| (*) |X| + |B|
        self.magnitude = self.product_magnitude + self.bias_magnitude

    @functools.cached_property
    def tap_magnitude(self) -> np.ndarray:
        return tap_magnitude(self.spec, self._x, self._w)

    @functools.cached_property
    def tap_count(self) -> np.ndarray:
        return tap_count(self.spec)
