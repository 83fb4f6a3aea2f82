"""Hazard predicates and the known divergences built on them.

Each predicate is checked on the config a runtime was measured to fail (conformance/repros/<id>)
and on a neighbour that differs in the one attribute the hazard is about, so a predicate that is
true everywhere (hiding unrelated failures) or false on its own repro fails here.  The table test
re-judges the smallest config of each failure class `deploykit conformance fuzz` found and checks
that the intended entry, and no earlier one, explains it.
"""

from __future__ import annotations

import pytest

from deploykit.lint import findings_for
from deploykit.op.hazards import HAZARDS
from deploykit.op.spec import ConvTransposeSpec as Spec
from deploykit.results.divergences import load, match

BF16 = dict(dtype="bfloat16", opset=22)
#: the torch-cpu / openvino-cpu bfloat16 class minimum (3-D, output_padding on depth)
BF16_DEPTH_OP = Spec((1, 1, 1, 1, 4), 1, (2, 1, 2), strides=(2, 1, 4), dilations=(1, 1, 2),
                     output_padding=(1, 0, 3), bias=False, **BF16)
#: the openvino-cpu SIGSEGV class minimum: the one output row lies between the dilated taps
BF16_BETWEEN_TAPS = Spec((1, 3, 1, 5), 1, (5, 1), dilations=(3, 1), output_padding=(2, 0),
                         auto_pad="SAME_UPPER", bias=False, **BF16)
#: the openvino-cpu class minimum: output_padding rows no tap reaches miss the bias (AMX brgconv_strided)
BF16_STRIDED_UNREACHED = Spec((1, 2, 1, 1), 1, (5, 1), strides=(3, 2), output_padding=(2, 0), auto_pad="VALID", **BF16)

#: (hazard, a config a runtime was measured to fail on, a neighbour the hazard must not flag)
CASES = [
    ("pads_with_auto_pad",
     Spec((1, 1, 1), 1, (2,), pads=(1, 1), auto_pad="SAME_UPPER", bias=False, expect="reject"),
     Spec((1, 1, 1), 1, (2,), auto_pad="SAME_UPPER", bias=False)),
    ("output_shape_beyond_stride",
     Spec((1, 1, 1), 1, (1,), output_shape=(3,), bias=False),
     Spec((1, 1, 1), 1, (1,), strides=3, output_shape=(3,), bias=False)),  # 2 beyond, below the stride
    ("grouped_output_shape_crop",
     Spec((1, 2, 1), 2, (2,), output_shape=(1,), group=2, bias=False),
     Spec((1, 2, 1), 2, (2,), output_shape=(1,), bias=False)),
    ("pointwise_output_padding_crop",
     Spec((1, 1, 1), 1, (1,), dilations=2, output_padding=1, auto_pad="SAME_LOWER", bias=False),
     Spec((1, 1, 1), 1, (1,), dilations=2, output_padding=1, auto_pad="SAME_UPPER", bias=False)),  # crops the end
    ("pointwise_output_padding_crop",  # the crop takes more than output_padding: measured right
     Spec((1, 1, 3), 1, (1,), dilations=2, output_padding=1, pads=(1, 0), bias=False),
     Spec((1, 1, 3), 1, (1,), dilations=2, output_padding=1, pads=(1, 1), bias=False)),
    ("pads_beyond_output",
     Spec((1, 1, 1), 1, (1,), pads=(1, 1), bias=False, expect="reject"),
     Spec((1, 1, 2), 1, (1,), pads=(1, 1), bias=False, expect="reject")),  # size 0: invalid, not negative
    ("same_output_padding_beyond_size",
     Spec((1, 3, 1), 1, (5,), dilations=3, output_padding=2, auto_pad="SAME_UPPER"),
     Spec((1, 3, 2), 1, (5,), dilations=3, output_padding=2, auto_pad="SAME_UPPER")),
    ("bf16_3d_depth_output_padding",
     BF16_DEPTH_OP,
     BF16_DEPTH_OP.replace(kernel_shape=(1, 1, 2))),  # a depth kernel of 1 was measured right
    ("bf16_output_between_taps",
     BF16_BETWEEN_TAPS,
     BF16_BETWEEN_TAPS.replace(auto_pad="NOTSET", pads=(6, 0, 8, 0))),  # the one row is a tap
    ("bf16_output_between_taps",  # two input rows whose taps both miss row 2 (measured crash) / reach it
     Spec((1, 3, 2, 5), 1, (5, 1), dilations=(3, 1), pads=(2, 0, 11, 0), bias=False, **BF16),
     Spec((1, 3, 3, 5), 1, (5, 1), dilations=(4, 1), pads=(3, 0, 13, 0), bias=False, **BF16)),
    ("bf16_output_between_taps",  # row 1 is between input 0's taps but input 1's first tap reaches it
     Spec((1, 3, 1, 5), 1, (5, 1), dilations=(3, 1), pads=(1, 0, 11, 0), bias=False, **BF16),
     Spec((1, 3, 2, 5), 1, (5, 1), dilations=(3, 1), pads=(1, 0, 12, 0), bias=False, **BF16)),
    ("bf16_strided_unreached_bias",
     BF16_STRIDED_UNREACHED,
     BF16_STRIDED_UNREACHED.replace(input_shape=(1, 3, 1, 1))),  # 3 input channels: measured right
    ("bf16_strided_unreached_bias",  # gaps between the taps along the last axis / along the first only
     Spec((1, 2, 2, 2), 2, (2, 1), strides=(1, 2), **BF16),
     Spec((1, 2, 2, 2), 2, (1, 2), strides=(2, 1), **BF16)),
]
FLAGGED = {name: flagged for name, flagged, _ in reversed(CASES)}  # the first case of each hazard


@pytest.mark.parametrize("name, flagged, neighbour", CASES, ids=[c[0] for c in CASES])
def test_a_new_hazard_flags_its_repro_config_and_not_its_neighbour(name, flagged, neighbour):
    assert HAZARDS[name].applies(flagged)
    assert not HAZARDS[name].applies(neighbour)


def test_dtype_limited_hazards_stay_off_float32():
    assert not HAZARDS["bf16_3d_depth_output_padding"].applies(BF16_DEPTH_OP.replace(dtype="float32", opset=17))
    assert not HAZARDS["bf16_output_between_taps"].applies(BF16_BETWEEN_TAPS.replace(dtype="float32", opset=17))
    assert not HAZARDS["bf16_strided_unreached_bias"].applies(BF16_STRIDED_UNREACHED.replace(dtype="float32", opset=17))
    assert not HAZARDS["bf16_strided_unreached_bias"].applies(BF16_STRIDED_UNREACHED.replace(bias=False))


def test_pads_with_auto_pad_ignores_pads_that_output_shape_overrides():
    """ONNX ignores pads given with output_shape (spec.py zeroes them): no conflict to flag."""
    spec = Spec((1, 1, 3), 1, (3,), pads=(1, 1), auto_pad="SAME_UPPER", output_shape=(3,))
    assert not HAZARDS["pads_with_auto_pad"].applies(spec)


OUTPUT_SHAPE_HEAD_EXTENSION = Spec((1, 1, 1), 1, (1,), strides=3, output_shape=(3,), bias=False)
FUZZ_CLASSES = [
    # (smallest config of a class, backend, verdict, the entry that must explain it)
    (FLAGGED["pads_with_auto_pad"], "onnx-reference", "accepted-invalid", "onnx-reference-pads-with-auto-pad"),
    (FLAGGED["pads_with_auto_pad"], "tract-cpu", "accepted-invalid", "tract-pads-with-auto-pad"),
    (Spec((1, 1, 1), 1, (1,), pads=(1, 1), auto_pad="SAME_UPPER", bias=False, expect="reject"),
     "openvino-cpu", "accepted-invalid", "openvino-pads-with-auto-pad"),
    (Spec((1, 1, 1), 1, (2,), output_padding=1, output_shape=(2,), bias=False, expect="reject"),
     "onnx-reference", "accepted-invalid", "onnx-reference-output-padding-ge-max"),
    (FLAGGED["output_shape_beyond_stride"], "onnx-reference", "rejected", "onnx-reference-output-shape-beyond-stride"),
    (FLAGGED["output_shape_beyond_stride"], "ort-cpu", "rejected", "ort-output-shape-beyond-stride"),
    (OUTPUT_SHAPE_HEAD_EXTENSION, "onnx-reference", "drift", "onnx-reference-output-shape-head-extension"),
    (OUTPUT_SHAPE_HEAD_EXTENSION, "ort-cpu", "drift", "ort-output-shape-head-extension"),
    (FLAGGED["pointwise_output_padding_crop"], "openvino-cpu", "drift", "openvino-pointwise-output-padding-crop"),
    (FLAGGED["grouped_output_shape_crop"], "openvino-cpu", "drift", "openvino-grouped-output-shape-pads"),
    (BF16_DEPTH_OP, "openvino-cpu", "nonfinite", "openvino-bf16-3d-output-padding-unwritten"),
    (BF16_DEPTH_OP, "torch-cpu", "drift", "torch-bf16-3d-output-padding-unwritten"),
    (BF16_DEPTH_OP.replace(bias=True), "torch-cpu", "nonfinite", "torch-bf16-3d-output-padding-unwritten"),
    (BF16_BETWEEN_TAPS, "openvino-cpu", "crash", "openvino-bf16-output-between-taps-crash"),
    (BF16_STRIDED_UNREACHED, "openvino-cpu", "drift", "openvino-bf16-strided-unreached-bias"),
    (FLAGGED["pads_beyond_output"], "tract-cpu", "crash", "tract-pads-beyond-output-panic"),
    (FLAGGED["same_output_padding_beyond_size"], "tract-cpu", "crash", "tract-same-output-padding-panic"),
]


@pytest.mark.parametrize("spec, backend, verdict, entry", FUZZ_CLASSES, ids=[c[3] + ":" + c[2] for c in FUZZ_CLASSES])
def test_each_fuzz_failure_class_is_explained_by_its_entry(spec, backend, verdict, entry):
    found = match(load(), spec, backend, verdict, "fp32", None)
    assert found is not None and found.id == entry


def test_the_new_entries_do_not_explain_a_plain_layer():
    """A plain stride-2 layer in every dtype: no new entry may turn its failure into a known one."""
    new = {c[3] for c in FUZZ_CLASSES}
    table = [e for e in load() if e.id in new]
    for dtype, opset in (("float32", 17), ("float16", 17), ("bfloat16", 22)):
        spec = Spec((1, 4, 5, 5, 5), 3, (3, 3, 3), strides=2, pads=1, output_padding=1, dtype=dtype, opset=opset)
        for backend in ("ort-cpu", "onnx-reference", "torch-cpu", "openvino-cpu", "tract-cpu"):
            for verdict in ("drift", "nonfinite", "rejected", "crash", "shape-mismatch", "accepted-invalid"):
                assert match(table, spec, backend, verdict, "fp32", None) is None, (dtype, backend, verdict)


def test_lint_names_the_new_hazard_on_a_model_with_pads_beside_auto_pad():
    spec = FLAGGED["pads_with_auto_pad"]
    rules = {f.rule for f in findings_for(spec, ["openvino-cpu", "tract-cpu"], load()) if f.kind == "hazard"}
    assert {"openvino-pads-with-auto-pad", "tract-pads-with-auto-pad"} <= rules
