"""Named conditions on a ConvTranspose config that real runtimes are known to get wrong.

`conformance/known_divergences.yaml` refers to these by name, and `deploykit lint` reports them;
one predicate per hazard keeps the two in agreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from deploykit.op.spec import ConvTransposeSpec, kernel_extent


@dataclass(frozen=True)
class Hazard:
    name: str
    summary: str
    applies: Callable[[ConvTransposeSpec], bool]


def _auto_pad_same(spec: ConvTransposeSpec) -> bool:
    return spec.auto_pad in ("SAME_UPPER", "SAME_LOWER")


def _same(spec: ConvTransposeSpec) -> bool:
    """SAME_* deciding the output size (output_shape, when given, decides it instead)."""
    return _auto_pad_same(spec) and spec.output_shape is None


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


def _grouped_several_channels_or_bias(spec: ConvTransposeSpec) -> bool:
    """group > 1 except a bias-free depthwise layer (one input and one output channel per group):
    a runtime that slices W by output channels and hands the whole bias to every group is right
    on exactly that layer (BigVGAN's anti-aliasing filters) and wrong on every other grouped one."""
    several = spec.in_channels // spec.group > 1 or spec.out_channels // spec.group > 1
    return spec.group > 1 and (several or spec.bias)


def _output_shape_positive_padding(spec: ConvTransposeSpec) -> bool:
    return spec.output_shape is not None and any(t > 0 for t in spec.total_padding)


def _output_shape_odd_padding(spec: ConvTransposeSpec) -> bool:
    return spec.output_shape is not None and any(t % 2 for t in spec.total_padding)


def _output_shape_without_same(spec: ConvTransposeSpec) -> bool:
    """output_shape with auto_pad NOTSET or VALID: the pads come from output_shape alone, which a
    runtime that derives pads from output_shape only under SAME_* (onnx.reference) never does."""
    return spec.output_shape is not None and not _auto_pad_same(spec)


def _output_shape_positive_padding_without_same(spec: ConvTransposeSpec) -> bool:
    return _output_shape_without_same(spec) and _output_shape_positive_padding(spec)


def _output_padding_ge_max(spec: ConvTransposeSpec) -> bool:
    return any(op >= max(s, d) for op, s, d in zip(spec.output_padding, spec.strides, spec.dilations))


def _output_shape_head_extension(spec: ConvTransposeSpec) -> bool:
    return spec.output_shape is not None and any(b < 0 for b in spec.resolved_pads()[0])


def _output_shape_head_extension_without_same(spec: ConvTransposeSpec) -> bool:
    return _output_shape_without_same(spec) and _output_shape_head_extension(spec)


def _output_shape_head_crop(spec: ConvTransposeSpec) -> bool:
    return spec.output_shape is not None and not _auto_pad_same(spec) and any(b > 0 for b in spec.resolved_pads()[0])


def _output_shape_same_upper_odd(spec: ConvTransposeSpec) -> bool:
    return (
        spec.output_shape is not None
        and spec.auto_pad == "SAME_UPPER"
        and any(t > 0 and t % 2 for t in spec.total_padding)
    )


def _output_shape_same_upper_odd_ungrouped(spec: ConvTransposeSpec) -> bool:
    """The SAME_UPPER odd-unit split on the group-1 path; a converter that drops output_shape's pads
    on the grouped path (openvino-grouped-output-shape-pads) never places the odd unit there."""
    return spec.group == 1 and _output_shape_same_upper_odd(spec)


def _output_shape_with_same(spec: ConvTransposeSpec) -> bool:
    return spec.output_shape is not None and _auto_pad_same(spec)


def _same_kernel_within_stride(spec: ConvTransposeSpec) -> bool:
    return _same(spec) and any(
        kernel_extent(k, d) <= s for k, s, d in zip(spec.kernel_shape, spec.strides, spec.dilations)
    )


def _same_output_padding_past_stride(spec: ConvTransposeSpec) -> bool:
    """SAME_* (no output_shape) with output_padding where kernel extent + output_padding > stride on
    some axis: there input x stride + output_padding (or the natural size, for an extent below the
    stride) is not input x stride.  At equality the natural size is input x stride, so a size rule
    that counts output_padding still gets it right."""
    return _same(spec) and any(
        op > 0 and kernel_extent(k, d) + op > s
        for k, s, d, op in zip(spec.kernel_shape, spec.strides, spec.dilations, spec.output_padding)
    )


def _output_shape_ignored(spec: ConvTransposeSpec) -> bool:
    """output_shape asks for a size other than the one the same config has without it (input x
    stride under SAME_*, else the natural size: ONNX ignores pads given with output_shape)."""
    return spec.output_shape is not None and spec.output_spatial != spec.replace(output_shape=None).output_spatial


def _size_without_output_shape_clamped(spec: ConvTransposeSpec) -> tuple[int, ...]:
    """The size the config has without output_shape, with SAME_*'s negative total padding clamped at
    0 (the natural size where it is below input x stride): what a runtime that ignores output_shape
    and clamps SAME's padding returns."""
    plain = spec.replace(output_shape=None).output_spatial
    if _auto_pad_same(spec):
        return tuple(min(n, p) for n, p in zip(spec.natural_spatial, plain))
    return plain


def _output_shape_unlike_clamped_size(spec: ConvTransposeSpec) -> bool:
    return spec.output_shape is not None and spec.output_shape != _size_without_output_shape_clamped(spec)


def _output_shape_with_same_clamped(spec: ConvTransposeSpec) -> bool:
    """output_shape beside SAME_* unlike the natural size on an axis where SAME's padding is negative
    (kernel extent + output_padding < stride), which a runtime that clamps it returns there."""
    return spec.output_shape is not None and _auto_pad_same(spec) and any(
        kernel_extent(k, d) + op < s and o != n
        for k, s, d, op, o, n in zip(spec.kernel_shape, spec.strides, spec.dilations, spec.output_padding,
                                     spec.output_shape, spec.natural_spatial)
    )


def _valid_not_input_x_stride(spec: ConvTransposeSpec) -> bool:
    """auto_pad VALID (no padding) where the natural size is not input x stride on some axis."""
    return (
        spec.auto_pad == "VALID"
        and spec.output_shape is None
        and spec.natural_spatial != tuple(i * s for i, s in zip(spec.in_spatial, spec.strides))
    )


def _pads_with_auto_pad(spec: ConvTransposeSpec) -> bool:
    """pads written beside auto_pad SAME_*/VALID: the spec forbids the pair, so runtimes that run it
    disagree on which of the two wins."""
    return spec.auto_pad != "NOTSET" and any(spec.pads)


def _output_shape_beyond_stride(spec: ConvTransposeSpec) -> bool:
    """output_shape at least stride - output_padding beyond the natural output on some axis: no input
    size maps to it, so a runtime that recomputes the input size from output_shape refuses it."""
    return spec.output_shape is not None and any(
        o - n >= s - op
        for o, n, s, op in zip(spec.output_shape, spec.natural_spatial, spec.strides, spec.output_padding)
        if o > n
    )


def _output_shape_beyond_stride_without_same(spec: ConvTransposeSpec) -> bool:
    return _output_shape_without_same(spec) and _output_shape_beyond_stride(spec)


def _grouped_output_shape_crop(spec: ConvTransposeSpec) -> bool:
    """group > 1 with an output_shape whose pads crop at the start: the grouped path is a separate
    operator in some converters, and the pads can be lost on the way to it."""
    return spec.group > 1 and spec.output_shape is not None and any(b > 0 for b in spec.resolved_pads()[0])


def _pointwise_output_padding_crop(spec: ConvTransposeSpec) -> bool:
    """A 1-tap stride-1 kernel on every axis whose output_padding is cropped off again (output size =
    input size), some of it at the start: the result is the plain product shifted, which a 1x1 fast
    path that ignores the pads gets wrong."""
    begin, end = spec.resolved_pads()
    return any(b > 0 for b in begin) and all(
        k == 1 and s == 1 and b + e == op
        for k, s, op, b, e in zip(spec.kernel_shape, spec.strides, spec.output_padding, begin, end)
    )


def _pads_beyond_output(spec: ConvTransposeSpec) -> bool:
    """Explicit pads that crop more than the whole natural output on some axis (a negative size):
    spec-invalid, and a runtime must refuse the model rather than build a negative shape."""
    begin, end = spec.pads[: spec.rank], spec.pads[spec.rank:]
    return any(n - b - e < 0 for n, b, e in zip(spec.natural_spatial, begin, end))


def _pads_with_auto_pad_leaving(spec: ConvTransposeSpec, smallest: int) -> bool:
    """pads beside auto_pad SAME_*/VALID that leave at least `smallest` output elements per axis: a
    runtime that uses the pads and ignores auto_pad runs these, and refuses the rest as it would
    refuse the same pads without auto_pad."""
    begin, end = spec.pads[: spec.rank], spec.pads[spec.rank:]
    return _pads_with_auto_pad(spec) and all(n - b - e >= smallest for n, b, e in zip(spec.natural_spatial, begin, end))


def _pads_with_auto_pad_down_to_empty(spec: ConvTransposeSpec) -> bool:
    return _pads_with_auto_pad_leaving(spec, 0)


def _pads_with_auto_pad_nonempty(spec: ConvTransposeSpec) -> bool:
    return _pads_with_auto_pad_leaving(spec, 1)


def _same_output_padding_beyond_size(spec: ConvTransposeSpec) -> bool:
    """SAME_* (no pads) with output_padding larger than input x stride on some axis: a runtime that
    subtracts output_padding from input x stride computes a negative size."""
    return _same(spec) and not any(spec.pads) and any(
        op > i * s for op, i, s in zip(spec.output_padding, spec.in_spatial, spec.strides)
    )


def _bf16_3d_depth_output_padding(spec: ConvTransposeSpec) -> bool:
    """bfloat16 3-D with output_padding on the depth axis that the crop keeps, a depth kernel above 1
    and an output width above 16: the shapes for which oneDNN's AMX bfloat16 deconvolution was measured
    to leave those output_padding elements unwritten."""
    if spec.dtype != "bfloat16" or spec.rank != 3:
        return False
    end = spec.resolved_pads()[1]
    return spec.output_padding[0] > end[0] and spec.kernel_shape[0] > 1 and spec.output_spatial[-1] > 16


def _bf16_output_between_taps(spec: ConvTransposeSpec) -> bool:
    """bfloat16 where, along an axis before the last, the output window lies wholly between the
    positions the dilated kernel taps reach: no input value reaches any output (each is the bias)."""
    if spec.dtype != "bfloat16":
        return False
    return any(not (_reached(spec, axis) & _output_window(spec, axis)) for axis in range(spec.rank - 1))


def _reached(spec: ConvTransposeSpec, axis: int) -> set[int]:
    """Positions along `axis` of the uncropped output that some kernel tap writes to."""
    return {
        i * spec.strides[axis] + t * spec.dilations[axis]
        for i in range(spec.in_spatial[axis])
        for t in range(spec.kernel_shape[axis])
    }


def _output_window(spec: ConvTransposeSpec, axis: int) -> set[int]:
    """The positions along `axis` of the uncropped output that the resolved pads keep."""
    begin = spec.resolved_pads()[0][axis]
    return set(range(begin, begin + spec.output_spatial[axis]))


def _unreached_on(spec: ConvTransposeSpec, axis: int) -> bool:
    """Some output position along `axis` that no kernel tap reaches (it holds the bias alone)."""
    return not _output_window(spec, axis) <= _reached(spec, axis)


def _bf16_strided_unreached_bias(spec: ConvTransposeSpec) -> bool:
    """bfloat16 with a bias, rank 2 or 3, an even number of input channels per group, a kernel larger
    than 1x1, a last-axis stride above 1, and some output that no kernel tap reaches: the shapes for
    which OpenVINO's AMX bfloat16 deconvolution (oneDNN brg_deconv + brgconv_strided) was measured to
    leave such outputs at 0 instead of the bias.  Not every such shape fails (the kernel's blocking
    decides: about one in three of those tried); none outside it failed."""
    if spec.dtype != "bfloat16" or not spec.bias or spec.rank < 2 or (spec.in_channels // spec.group) % 2:
        return False
    if all(k == 1 for k in spec.kernel_shape) or spec.strides[-1] == 1:
        return False
    return any(_unreached_on(spec, axis) for axis in range(spec.rank))


def _float64(spec: ConvTransposeSpec) -> bool:
    return spec.dtype == "float64"


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
            "grouped_several_channels_or_bias",
            "group > 1 with several input or output channels per group, or a bias (every grouped layer"
            " but a bias-free depthwise one)",
            _grouped_several_channels_or_bias,
        ),
        Hazard(
            "output_shape_positive_padding",
            "output_shape smaller than the natural output (positive total padding to crop)",
            _output_shape_positive_padding,
        ),
        Hazard(
            "output_shape_positive_padding_without_same",
            "output_shape smaller than the natural output, auto_pad NOTSET or VALID",
            _output_shape_positive_padding_without_same,
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
            "output_shape_head_extension_without_same",
            "output_shape larger than the natural output where the spec zero-extends at the start too,"
            " auto_pad NOTSET or VALID",
            _output_shape_head_extension_without_same,
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
            "output_shape_same_upper_odd_padding_ungrouped",
            "output_shape with SAME_UPPER and odd total padding on a group-1 layer: the spec puts the odd"
            " unit at the end",
            _output_shape_same_upper_odd_ungrouped,
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
            "same_output_padding_past_stride",
            "SAME_* with output_padding where kernel extent + output_padding > stride: ONNX shape inference"
            " gives another size than input x stride",
            _same_output_padding_past_stride,
        ),
        Hazard(
            "output_shape_ignored",
            "output_shape that changes the output size: a runtime that ignores it returns the size"
            " the config has without it",
            _output_shape_ignored,
        ),
        Hazard(
            "output_shape_unlike_clamped_size",
            "output_shape other than the size the config has without it, SAME_*'s negative padding clamped"
            " at 0: a runtime that ignores output_shape and clamps returns that size",
            _output_shape_unlike_clamped_size,
        ),
        Hazard(
            "output_shape_with_same_clamped",
            "output_shape beside SAME_*, unlike the natural size on an axis where SAME's padding is negative",
            _output_shape_with_same_clamped,
        ),
        Hazard(
            "valid_not_input_x_stride",
            "auto_pad VALID where the natural size is not input x stride: a runtime that pads VALID"
            " like SAME_LOWER returns input x stride",
            _valid_not_input_x_stride,
        ),
        Hazard(
            "pads_with_auto_pad",
            "pads set together with auto_pad SAME_*/VALID: spec-invalid; runtimes that run it disagree on"
            " which one wins",
            _pads_with_auto_pad,
        ),
        Hazard(
            "pads_with_auto_pad_down_to_empty",
            "pads set together with auto_pad SAME_*/VALID that leave an output of size 0 or more:"
            " spec-invalid; a runtime that uses the pads runs it",
            _pads_with_auto_pad_down_to_empty,
        ),
        Hazard(
            "pads_with_auto_pad_nonempty",
            "pads set together with auto_pad SAME_*/VALID that leave a non-empty output: spec-invalid;"
            " a runtime that uses the pads runs it",
            _pads_with_auto_pad_nonempty,
        ),
        Hazard(
            "output_shape_beyond_stride",
            "output_shape at least (stride - output_padding) larger than the natural output: no input size"
            " gives it; the spec zero-extends, some runtimes refuse the model",
            _output_shape_beyond_stride,
        ),
        Hazard(
            "output_shape_beyond_stride_without_same",
            "output_shape at least (stride - output_padding) larger than the natural output, auto_pad"
            " NOTSET or VALID",
            _output_shape_beyond_stride_without_same,
        ),
        Hazard(
            "grouped_output_shape_crop",
            "group > 1 with an output_shape that crops at the start: a converter can lose the pads on the"
            " grouped path",
            _grouped_output_shape_crop,
        ),
        Hazard(
            "pointwise_output_padding_crop",
            "1x1 stride-1 kernel whose output_padding is cropped off again, partly at the start (output"
            " size = input size): a 1x1 fast path can ignore the shift",
            _pointwise_output_padding_crop,
        ),
        Hazard(
            "pads_beyond_output",
            "explicit pads larger than the natural output (a negative output size): spec-invalid, a runtime"
            " must refuse it",
            _pads_beyond_output,
        ),
        Hazard(
            "same_output_padding_beyond_size",
            "SAME_* with output_padding larger than input x stride: a runtime that subtracts"
            " output_padding from input x stride gets a negative size",
            _same_output_padding_beyond_size,
        ),
        Hazard(
            "bf16_3d_depth_output_padding",
            "bfloat16 3-D with output_padding on the depth axis (depth kernel > 1, output width > 16):"
            " oneDNN's AMX kernel leaves those output elements unwritten",
            _bf16_3d_depth_output_padding,
        ),
        Hazard(
            "bf16_output_between_taps",
            "bfloat16 where, along an outer axis, the whole output falls between the positions the dilated"
            " kernel taps reach (every output is the bias alone)",
            _bf16_output_between_taps,
        ),
        Hazard(
            "bf16_strided_unreached_bias",
            "bfloat16 with a bias, an even number of channels per group, a last-axis stride above 1 and"
            " outputs no kernel tap reaches: OpenVINO's AMX kernel may leave them at 0 instead of the bias",
            _bf16_strided_unreached_bias,
        ),
        Hazard(
            "float64",
            "a float64 model: GPU runtimes have float64 kernels only where they were written for it,"
            " and a float64 path is rarely the one that is tested",
            _float64,
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

