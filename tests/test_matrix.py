"""Matrix loading: expansion, coverage of the shipped matrices, and clear errors."""

from __future__ import annotations

import pytest

from deploykit.errors import UsageError
from deploykit.matrix import load
from deploykit.spec import ConvTransposeSpec


def test_smoke_covers_every_attribute():
    specs = load("smoke").specs
    valid = [s for s in specs if s.expect == "accept"]
    assert {s.rank for s in valid} == {1, 2, 3}
    assert any(s.group > 1 and s.out_channels // s.group > 1 and s.in_channels != s.out_channels for s in valid)
    assert any(s.group > 1 and s.group == s.in_channels == s.out_channels for s in valid)  # depthwise
    assert any(s.auto_pad == "NOTSET" and s.output_shape is None and s.pads[: s.rank] != s.pads[s.rank :] for s in valid)
    for mode in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        assert any(s.auto_pad == mode for s in valid), mode
    assert any(s.auto_pad.startswith("SAME") and any(t % 2 for t in s.total_padding) for s in valid)
    assert any(s.output_shape and any(t > 0 for t in s.total_padding) for s in valid)
    assert any(s.output_shape and any(t < 0 for t in s.total_padding) for s in valid)
    assert any(any(s.output_padding) and set(s.dilations) == {1} for s in valid)
    assert any(any(s.output_padding) and max(s.dilations) > 1 for s in valid)
    assert any(max(s.strides) > 1 and max(s.dilations) > 1 for s in valid)
    assert {s.bias for s in valid} == {True, False}
    assert {"float32", "float16"} <= {s.dtype for s in valid}
    assert any(s.expect == "reject" for s in specs)


def test_default_matrix_is_a_few_hundred_valid_configs():
    specs = load("default").specs
    assert 200 <= len(specs) <= 800
    assert all(s.is_valid for s in specs)
    assert len({s.id for s in specs}) == len(specs)


def test_dtypes_retarget_and_bfloat16_raises_the_opset():
    specs = load("smoke", dtypes=["bfloat16"]).specs
    assert {s.dtype for s in specs} == {"bfloat16"}
    assert all(s.opset >= 22 for s in specs)


def test_pads_pair_broadcasts_to_begin_and_end():
    spec = ConvTransposeSpec((1, 2, 4, 4, 4), 2, 3, pads=[0, 1])
    assert spec.pads == (0, 0, 0, 1, 1, 1)


def test_axes_pairs_and_cross(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "cross: [dtype]\n"
        "defaults: {input_shape: [1, 4, 6], out_channels: 4}\n"
        "axes:\n  kernel_shape: [2, 3]\n  strides: [1, 2]\n  group: [1, 2]\n  dtype: [float32, float16]\n"
    )
    specs = load(str(path)).specs
    for dtype in ("float32", "float16"):
        subset = [s for s in specs if s.dtype == dtype]
        pairs = {(s.kernel_shape[0], s.strides[0]) for s in subset}
        assert pairs == {(2, 1), (2, 2), (3, 1), (3, 2)}


@pytest.mark.parametrize(
    "text, needle",
    [
        ("cases:\n  - {input_shape: [1, 4, 5], out_channels: 4, kernel_shape: 3, expect: reject}\n", "marked `expect: reject` but the config is valid"),
        ("cases:\n  - {input_shape: [1, 4, 5], out_channels: 4, kernel_shape: [3, 3]}\n", "kernel_shape has 2 values, expected 1"),
        ("cases:\n  - {input_shape: [1, 4, 5], kernel_shape: 3}\n", "out_channels is required"),
        ("axes: [1, 2]\n", "defaults and axes must be mappings"),
        ("oops: 1\n", "unknown top-level key(s) oops"),
        ("defaults: {input_shape: [1, 4, 5], out_channels: 4, kernel_shape: 3}\naxes:\n  foo: [1, 2]\n  strides: [1, 2]\n",
         "unknown key(s) foo"),
        ("defaults: {input_shape: [1, 4, 5], out_channels: 4}\naxes:\n  kernel_shape: 3\n", "axis 'kernel_shape' must be a non-empty list"),
        ("axes:\n  strides: [1]\ncross: [nope]\n", "cross must list axis names"),
        ("cases:\n  - {input_shape: [1, 4, 5], out_channels: 4, kernel_shape: 3, dtype: bfloat16, opset: 17}\n", "bfloat16 ConvTranspose needs opset >= 22"),
    ],
)
def test_matrix_errors_name_the_problem(tmp_path, text, needle):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=None) as error:
        load(str(path))
    assert needle in str(error.value)
