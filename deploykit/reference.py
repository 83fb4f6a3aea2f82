"""The float64 oracle for ONNX ConvTranspose, in plain NumPy.

Independent of `onnx.reference` and torch on purpose: both are backends under test here.  The
algorithm is the textbook one, chosen for speed without a Python loop over pixels:
one batched GEMM covering every group (W_g^T @ X_g gives one column per kernel tap and input
pixel), then a col2im scatter with one strided add per kernel tap, then the crop (or zero
extension) that the resolved pads ask for.  The same operator on |x|, |w|, |b| gives the
magnitude term of the rounding-error bound, which is why `magnitude` is public.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from deploykit.spec import AUTO_PADS, ConvTransposeSpec, resolve_pads


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

    per_group_in = channels // group
    per_group_out = w.shape[1]
    out_channels = per_group_out * group
    taps = math.prod(kernel)
    pixels = math.prod(in_spatial)

    # One GEMM per group, all groups in one batched call: (G, Mg*K, Cg) @ (N, G, Cg, P).
    w_groups = w.reshape(group, per_group_in, per_group_out * taps).transpose(0, 2, 1)
    x_groups = x.reshape(batch, group, per_group_in, pixels)
    columns = np.matmul(w_groups, x_groups).reshape(batch, out_channels, taps, *in_spatial)

    natural = [
        s * (n - 1) + op + (k - 1) * d + 1
        for n, k, s, d, op in zip(in_spatial, kernel, strides, dilations, output_padding)
    ]
    full = np.zeros((batch, out_channels, *natural), dtype=np.float64)
    for tap, offsets in enumerate(np.ndindex(*kernel)):
        window = tuple(
            slice(o * d, o * d + s * (n - 1) + 1, s)
            for o, d, s, n in zip(offsets, dilations, strides, in_spatial)
        )
        full[(slice(None), slice(None), *window)] += columns[:, :, tap]

    sizes = [n - b_ - e_ for n, b_, e_ in zip(natural, begin, end)]
    if min(sizes) < 1:
        raise ValueError(f"output spatial size {sizes} has an axis below 1")
    out = _crop_or_extend(full, begin, end)
    if b is not None:
        out += np.asarray(b, dtype=np.float64).reshape(1, out_channels, *([1] * rank))
    return out


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
    return np.ascontiguousarray(full[(slice(None), slice(None), *window)])


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
