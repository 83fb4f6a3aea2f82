"""Named conditions on a ConvTranspose config that real runtimes are known to get wrong.

`conformance/known_divergences.yaml` refers to these by name, and `deploykit lint` reports them;
one predicate per hazard keeps the two in agreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from deploykit.spec import ConvTransposeSpec, kernel_extent


@dataclass(frozen=True)
class Hazard:
    name: str
    summary: str
    applies: Callable[[ConvTransposeSpec], bool]


def _same(spec: ConvTransposeSpec) -> bool:
    return spec.auto_pad in ("SAME_UPPER", "SAME_LOWER") and spec.output_shape is None


def _output_padding_ge_stride(spec: ConvTransposeSpec) -> bool:
    return any(op >= s for op, s in zip(spec.output_padding, spec.strides))


def _same_negative_padding(spec: ConvTransposeSpec) -> bool:
    return _same(spec) and any(
        op + kernel_extent(k, d) < s
        for k, s, d, op in zip(spec.kernel_shape, spec.strides, spec.dilations, spec.output_padding)
    )


def _same_with_output_padding(spec: ConvTransposeSpec) -> bool:
    return _same(spec) and any(spec.output_padding)


def _grouped(spec: ConvTransposeSpec) -> bool:
    return spec.group > 1


def _output_shape_positive_padding(spec: ConvTransposeSpec) -> bool:
    return spec.output_shape is not None and any(t > 0 for t in spec.total_padding)


def _output_shape_odd_padding(spec: ConvTransposeSpec) -> bool:
    return spec.output_shape is not None and any(t % 2 for t in spec.total_padding)


def _output_padding_ge_max(spec: ConvTransposeSpec) -> bool:
    return any(op >= max(s, d) for op, s, d in zip(spec.output_padding, spec.strides, spec.dilations))


def _output_shape_head_extension(spec: ConvTransposeSpec) -> bool:
    return spec.output_shape is not None and any(b < 0 for b in spec.resolved_pads()[0])


def _output_shape_head_crop(spec: ConvTransposeSpec) -> bool:
    return spec.output_shape is not None and not _is_same(spec) and any(b > 0 for b in spec.resolved_pads()[0])


def _output_shape_same_upper_odd(spec: ConvTransposeSpec) -> bool:
    return (
        spec.output_shape is not None
        and spec.auto_pad == "SAME_UPPER"
        and any(t > 0 and t % 2 for t in spec.total_padding)
    )


def _output_shape_with_same(spec: ConvTransposeSpec) -> bool:
    return spec.output_shape is not None and _is_same(spec)


def _same_kernel_within_stride(spec: ConvTransposeSpec) -> bool:
    return _same(spec) and any(
        kernel_extent(k, d) <= s for k, s, d in zip(spec.kernel_shape, spec.strides, spec.dilations)
    )


def _is_same(spec: ConvTransposeSpec) -> bool:
    return spec.auto_pad in ("SAME_UPPER", "SAME_LOWER")


def _checkerboard(spec: ConvTransposeSpec) -> bool:
    return any(k % s for k, s in zip(spec.kernel_shape, spec.strides) if s > 1)


def _asymmetric_pads(spec: ConvTransposeSpec) -> bool:
    begin, end = spec.resolved_pads()
    return begin != end


HAZARDS: dict[str, Hazard] = {
    h.name: h
    for h in (
        Hazard(
            "output_padding_ge_stride",
            "output_padding >= stride (valid while below the dilation; ONNX Runtime refuses it)",
            _output_padding_ge_stride,
        ),
        Hazard(
            "same_negative_padding",
            "SAME_* with kernel extent + output_padding < stride: the spec zero-extends to input x stride,"
            " runtimes and shape inference return the smaller natural size",
            _same_negative_padding,
        ),
        Hazard(
            "same_with_output_padding",
            "SAME_* with output_padding: ONNX shape inference adds output_padding, runtimes give input x stride",
            _same_with_output_padding,
        ),
        Hazard("grouped", "group > 1 (grouped or depthwise ConvTranspose)", _grouped),
        Hazard(
            "output_shape_positive_padding",
            "output_shape smaller than the natural output (positive total padding to crop)",
            _output_shape_positive_padding,
        ),
        Hazard(
            "output_shape_odd_padding",
            "output_shape with odd total padding: runtimes split the odd unit differently",
            _output_shape_odd_padding,
        ),
        Hazard(
            "output_padding_ge_max",
            "output_padding >= max(stride, dilation): spec-invalid, yet some runtimes run it and grow the output",
            _output_padding_ge_max,
        ),
        Hazard(
            "output_shape_head_extension",
            "output_shape larger than the natural output where the spec zero-extends at the start too",
            _output_shape_head_extension,
        ),
        Hazard(
            "output_shape_head_crop",
            "output_shape smaller than the natural output where the spec crops at the start",
            _output_shape_head_crop,
        ),
        Hazard(
            "output_shape_same_upper_odd_padding",
            "output_shape with SAME_UPPER and odd total padding: the spec puts the odd unit at the end",
            _output_shape_same_upper_odd,
        ),
        Hazard(
            "output_shape_with_same",
            "output_shape together with auto_pad SAME_*",
            _output_shape_with_same,
        ),
        Hazard(
            "same_kernel_within_stride",
            "SAME_* with a kernel extent at most the stride on some axis (a 1x1 kernel included)",
            _same_kernel_within_stride,
        ),
        Hazard(
            "asymmetric_pads",
            "asymmetric resolved pads: one framework call (torch, some TensorRT versions) cannot express them",
            _asymmetric_pads,
        ),
        Hazard(
            "checkerboard",
            "kernel size not divisible by stride: uneven overlap, checkerboard artifacts",
            _checkerboard,
        ),
    )
}

