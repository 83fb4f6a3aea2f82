"""The space `deploykit conformance fuzz` searches: ConvTranspose configs as a Hypothesis strategy.

Every config is drawn in an order that makes Hypothesis's shrinking (which simplifies the earliest
choices first, integers towards their minimum and `sampled_from` towards its first element) give
what a maintainer wants to read: the lowest rank, then the fewest channels, then the smallest
spatial size and kernel, then the plainest attributes (stride 1, no padding, NOTSET, no bias,
float32, the default opset).

Draws lean towards the edges where runtimes were seen to break rather than spreading evenly:
output_padding at its largest legal value, kernel extents below the stride, odd total padding,
more output than input channels per group, size-1 spatial axes, output_shape beside SAME_*.
About one config in five is deliberately spec-invalid (`expect: reject`) to find runtimes that
run what they must refuse.
"""

from __future__ import annotations

from typing import Sequence

from hypothesis import assume
from hypothesis import strategies as st

from deploykit.op.spec import BFLOAT16_MIN_OPSET, DEFAULT_OPSET, MAX_OPSET, ConvTransposeSpec, kernel_extent

#: Opsets tried, the default first (where shrinking goes); each one ConvTranspose's text applies to.
OPSETS = (DEFAULT_OPSET, 11, 13, 18, 21, 22, MAX_OPSET)
#: How a config goes wrong on purpose, when it does; the first is the one shrinking ends on.
VIOLATIONS = ("output_padding", "group", "pads_with_auto_pad", "negative_output")
MAX_SPATIAL = 8
MAX_KERNEL = 5
MAX_STRIDE = 4
MAX_DILATION = 3
MAX_PER_GROUP = 3
GROUPS = (1, 2, 3, 4)


def _edge_biased(draw, low: int, high: int, edge: int) -> int:
    """`low` (the simplest), `edge` (where runtimes break) or anything between, in that order."""
    choice = draw(st.sampled_from(("low", "edge", "any")))
    if choice == "low" or high <= low:
        return low
    return min(max(edge, low), high) if choice == "edge" else draw(st.integers(low, high))


@st.composite
def _axis(draw, crop: str) -> dict:
    """One spatial axis, self-contained, so that shrinking can delete any axis of a list of them.

    `crop` is how the config crops its natural output: "pads" (explicit, each side at most 3 and
    at least one element left, odd totals as likely as even), "output_shape" (a target from two
    larger than natural, a zero extension, down to 1) or "auto" (auto_pad decides)."""
    used = draw(st.integers(0, 3)) > 0  # shrinking (towards 0) drops the axis: see valid_specs
    size = draw(st.integers(1, MAX_SPATIAL))
    kernel = draw(st.integers(1, MAX_KERNEL))
    stride = draw(st.integers(1, MAX_STRIDE))
    dilation = draw(st.integers(1, MAX_DILATION))
    limit = max(stride, dilation) - 1  # output_padding must stay below max(stride, dilation)
    output_padding = _edge_biased(draw, 0, limit, limit)
    natural = stride * (size - 1) + output_padding + kernel_extent(kernel, dilation)
    axis = {"used": used, "size": size, "kernel": kernel, "stride": stride, "dilation": dilation,
            "output_padding": output_padding}
    if crop == "pads":
        axis["begin"] = draw(st.integers(0, min(3, natural - 1)))
        axis["end"] = draw(st.integers(0, min(3, natural - 1 - axis["begin"])))
    elif crop == "output_shape":
        axis["output_shape"] = natural - draw(st.integers(-2, natural - 1))
    return axis


def _crop_attributes(auto_pad: str, crop: str, axes: list[dict]) -> dict:
    attributes: dict = {"auto_pad": auto_pad}
    if crop == "pads":
        attributes["pads"] = [a["begin"] for a in axes] + [a["end"] for a in axes]
    elif crop == "output_shape":
        attributes["output_shape"] = [a["output_shape"] for a in axes]
    return attributes


@st.composite
def valid_specs(draw, dtypes: Sequence[str]) -> ConvTransposeSpec:
    """A spec-valid config (`expect: accept`); channels come per group."""
    group = draw(st.sampled_from(GROUPS))
    c_per_group = draw(st.integers(1, MAX_PER_GROUP))
    m_per_group = draw(st.integers(1, MAX_PER_GROUP))
    auto_pad = draw(st.sampled_from(("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")))
    with_output_shape = draw(st.integers(0, 3)) == 3 and auto_pad != "VALID"
    crop = "output_shape" if with_output_shape else "pads" if auto_pad == "NOTSET" else "auto"
    # Each axis carries a flag that shrinking turns off, so any axis can go, not only the last:
    # Hypothesis's shrinker does not delete a list element as long as an axis's draws.
    axes = [axis for axis in draw(st.lists(_axis(crop), min_size=1, max_size=3)) if axis["used"]]
    assume(axes)
    batch = draw(st.integers(1, 2))
    dtype = draw(st.sampled_from(tuple(dtypes)))
    opsets = [o for o in OPSETS if dtype != "bfloat16" or o >= BFLOAT16_MIN_OPSET]
    return ConvTransposeSpec(
        input_shape=(batch, group * c_per_group, *(a["size"] for a in axes)),
        out_channels=group * m_per_group, group=group,
        kernel_shape=tuple(a["kernel"] for a in axes), strides=tuple(a["stride"] for a in axes),
        dilations=tuple(a["dilation"] for a in axes), output_padding=tuple(a["output_padding"] for a in axes),
        **_crop_attributes(auto_pad, crop, axes),
        bias=draw(st.booleans()), dtype=dtype, opset=draw(st.sampled_from(opsets)),
        weights_as_inputs=draw(st.booleans()),
    )


def _break(draw, spec: ConvTransposeSpec, violation: str) -> ConvTransposeSpec:
    """`spec` made spec-invalid in one way (the rule `ConvTransposeSpec.violations` names)."""
    if violation == "output_padding":
        limit = max(spec.strides[0], spec.dilations[0])
        padding = (limit + draw(st.integers(0, 1)),) + spec.output_padding[1:]
        return spec.replace(output_padding=padding)
    if violation == "group":
        # One more input channel than the groups divide.  (An out_channels the groups do not divide
        # cannot be written: an ONNX model has M = W.shape[1] x group.)
        group = max(spec.group, 2)
        shape = (spec.batch, group * (spec.in_channels // spec.group) + 1, *spec.in_spatial)
        return spec.replace(input_shape=shape, group=group, out_channels=group * (spec.out_channels // spec.group))
    if violation == "pads_with_auto_pad":
        auto_pad = draw(st.sampled_from(("SAME_UPPER", "SAME_LOWER", "VALID")))
        return spec.replace(auto_pad=auto_pad, output_shape=None, pads=(1,) * (2 * spec.rank))
    # negative_output: pads that crop one more than everything along axis 0.  (A zero-size output
    # is not generated: the spec text neither allows nor forbids it, and ONNX allows empty tensors.)
    total = spec.natural_spatial[0] + 1
    pads = [0] * (2 * spec.rank)
    pads[0], pads[spec.rank] = total // 2, total - total // 2
    return spec.replace(auto_pad="NOTSET", output_shape=None, pads=tuple(pads))


@st.composite
def specs(draw, dtypes: Sequence[str]) -> ConvTransposeSpec:
    """Valid configs, and about one in five deliberately invalid (`expect: reject`)."""
    spec = draw(valid_specs(dtypes))
    if draw(st.integers(0, 4)) < 4:
        return spec
    broken = _break(draw, spec, draw(st.sampled_from(VIOLATIONS)))
    return broken.replace(expect="reject") if not broken.is_valid else spec
