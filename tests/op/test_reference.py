"""Tests of the float64 ConvTranspose oracle (deploykit.op.reference) and of spec padding rules.

Three independent sources of truth:
  * the ConvTranspose node cases shipped with onnx (known answers),
  * torch float64 conv_transpose{1,2,3}d on random valid configurations (Hypothesis),
  * hand-worked padding arithmetic from the ONNX ConvTranspose text.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from deploykit.op import reference
from deploykit.op.spec import ConvTransposeSpec, SpecError, resolve_pads, split_total_padding


# ----- known answers: the onnx node test cases ------------------------------------------------
def _collect_onnx_cases():
    # collect_testcases imports every node-case module; unrelated ops emit RuntimeWarnings.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases

        return list(collect_testcases("ConvTranspose"))


ONNX_CASES = {case.name: case for case in _collect_onnx_cases()}


def _decode(value):
    if isinstance(value, bytes):
        return value.decode()
    return value


def test_onnx_cases_were_collected():
    assert len(ONNX_CASES) == 11, sorted(ONNX_CASES)


@pytest.mark.parametrize("name", sorted(ONNX_CASES))
def test_onnx_node_case(name):
    case = ONNX_CASES[name]
    node = case.model.graph.node[0]
    assert node.op_type == "ConvTranspose"
    attrs = {a.name: _decode(onnx.helper.get_attribute_value(a)) for a in node.attribute}
    attrs.pop("kernel_shape", None)
    assert len(case.data_sets) == 1
    inputs, outputs = case.data_sets[0]
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    expected = outputs[0]
    got = reference.conv_transpose(x, w, b, **attrs)
    assert got.dtype == np.float64
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


# ----- property tests against torch float64 ---------------------------------------------------
@st.composite
def valid_specs(draw):
    rank = draw(st.integers(1, 3))
    batch = draw(st.integers(1, 2))
    group = draw(st.integers(1, 4))
    in_channels = group * draw(st.integers(1, 4 // group))
    out_channels = group * draw(st.integers(1, 4 // group))
    max_in = 4 if rank < 3 else 3
    in_spatial = draw(st.lists(st.integers(1, max_in), min_size=rank, max_size=rank))
    kernel = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    strides = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    dilations = draw(st.lists(st.integers(1, 2), min_size=rank, max_size=rank))
    output_padding = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(strides, dilations)]
    auto_pad = draw(st.sampled_from(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    pads = [0] * (2 * rank)
    output_shape = None
    if auto_pad == "NOTSET":
        mode = draw(st.sampled_from(["pads", "pads", "output_shape"]))
        if mode == "pads":
            pads = draw(st.lists(st.integers(0, 2), min_size=2 * rank, max_size=2 * rank))
        else:
            natural = [
                s * (n - 1) + op + (k - 1) * d + 1
                for n, k, s, d, op in zip(in_spatial, kernel, strides, dilations, output_padding)
            ]
            output_shape = [max(1, n + draw(st.integers(-2, 2))) for n in natural]
    spec = ConvTransposeSpec(
        input_shape=(batch, in_channels, *in_spatial),
        out_channels=out_channels,
        kernel_shape=tuple(kernel),
        strides=tuple(strides),
        pads=tuple(pads),
        output_padding=tuple(output_padding),
        dilations=tuple(dilations),
        group=group,
        auto_pad=auto_pad,
        output_shape=None if output_shape is None else tuple(output_shape),
        bias=draw(st.booleans()),
        dtype="float64",
    )
    seed = draw(st.integers(0, 2**32 - 1))
    return spec, seed


def _crop_or_zero_extend(full: np.ndarray, begin, end) -> np.ndarray:
    """Test-side crop/extend, written independently: per axis, index arithmetic into a new array."""
    spatial_out = [n - b - e for n, b, e in zip(full.shape[2:], begin, end)]
    out = np.zeros(full.shape[:2] + tuple(spatial_out), dtype=full.dtype)
    src, dst = [slice(None), slice(None)], [slice(None), slice(None)]
    for n, m, b in zip(full.shape[2:], spatial_out, begin):
        # output index j corresponds to full index j + b
        lo = max(0, -b)  # first output index with a source
        hi = min(m, n - b)  # one past the last output index with a source
        if hi <= lo:
            return out
        dst.append(slice(lo, hi))
        src.append(slice(lo + b, hi + b))
    out[tuple(dst)] = full[tuple(src)]
    return out


def _torch_expected(spec: ConvTransposeSpec, x, w, b) -> np.ndarray:
    torch = pytest.importorskip("torch")
    fn = {
        1: torch.nn.functional.conv_transpose1d,
        2: torch.nn.functional.conv_transpose2d,
        3: torch.nn.functional.conv_transpose3d,
    }[spec.rank]
    full = fn(
        torch.from_numpy(x),
        torch.from_numpy(w),
        None,
        stride=spec.strides,
        padding=0,
        output_padding=spec.output_padding,
        groups=spec.group,
        dilation=spec.dilations,
    ).numpy()
    assert full.shape[2:] == spec.natural_spatial
    begin, end = spec.resolved_pads()
    out = _crop_or_zero_extend(full, begin, end)
    if b is not None:
        out = out + b.reshape(1, -1, *([1] * spec.rank))
    return out


def _random_inputs(spec: ConvTransposeSpec, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec.input_shape)
    w = rng.standard_normal(spec.weight_shape)
    b = rng.standard_normal(spec.out_channels) if spec.bias else None
    return x, w, b


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(valid_specs())
def test_reference_matches_torch_float64(case):
    pytest.importorskip("torch")
    spec, seed = case
    assume(spec.is_valid)
    x, w, b = _random_inputs(spec, seed)
    expected = _torch_expected(spec, x, w, b)
    got = reference.run_spec(spec, x, w, b)
    assert got.shape == spec.output_full_shape
    assert got.shape == expected.shape
    mag = reference.magnitude(spec, x, w, b)
    err = np.abs(got - expected)
    assert np.all(err <= 1e-10 * mag), (spec, float(np.max(err - 1e-10 * mag)))


# ----- spec padding units ---------------------------------------------------------------------
def test_split_total_padding():
    assert split_total_padding(3, tail_heavy=True) == (1, 2)
    assert split_total_padding(3, tail_heavy=False) == (2, 1)
    assert split_total_padding(-1, tail_heavy=False) == (0, -1)
    assert split_total_padding(4, tail_heavy=True) == (2, 2)


def test_same_upper_odd_total_extra_at_end():
    # input 3, kernel 3, stride 2: natural 7, SAME target 6, total 1.
    spec = ConvTransposeSpec(input_shape=(1, 1, 3, 3), out_channels=1, kernel_shape=(3, 3),
                             strides=(2, 2), auto_pad="SAME_UPPER")
    assert spec.natural_spatial == (7, 7)
    assert spec.resolved_pads() == ((0, 0), (1, 1))
    assert spec.output_spatial == (6, 6)


def test_same_lower_odd_total_extra_at_start():
    spec = ConvTransposeSpec(input_shape=(1, 1, 3, 3), out_channels=1, kernel_shape=(3, 3),
                             strides=(2, 2), auto_pad="SAME_LOWER")
    assert spec.resolved_pads() == ((1, 1), (0, 0))
    assert spec.output_spatial == (6, 6)


def test_output_shape_negative_total_pads():
    # onnx test_convtranspose_output_shape: natural (9, 7) against output_shape (10, 8).
    spec = ConvTransposeSpec(input_shape=(1, 1, 3, 3), out_channels=2, kernel_shape=(3, 3),
                             strides=(3, 2), output_shape=(10, 8), bias=False)
    begin, end = spec.resolved_pads()
    assert spec.natural_spatial == (9, 7)
    assert (begin[0], end[0]) == (0, -1)
    assert (begin[1], end[1]) == (0, -1)
    assert spec.total_padding == (-1, -1)
    assert spec.output_spatial == (10, 8)
    assert spec.is_valid


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_same_with_kernel_extent_below_stride(auto_pad):
    # k1 s2 on input 5: natural 9, SAME target 10, total -1 (zero extension by one).
    spec = ConvTransposeSpec(input_shape=(1, 1, 5), out_channels=1, kernel_shape=(1,),
                             strides=(2,), auto_pad=auto_pad)
    assert spec.natural_spatial == (9,)
    assert spec.output_spatial == (10,)
    assert spec.total_padding == (-1,)
    assert spec.is_valid
    begin, end = spec.resolved_pads()
    # Floor division as in onnx.reference's ConvTranspose: the "upper" side gets the larger pad.
    if auto_pad == "SAME_UPPER":
        assert (begin, end) == ((-1,), (0,))
    else:
        assert (begin, end) == ((0,), (-1,))
    x = np.arange(1, 6, dtype=np.float64).reshape(1, 1, 5)
    w = np.ones((1, 1, 1))
    out = reference.run_spec(spec, x, w, None)
    assert out.shape == (1, 1, 10)
    full = np.array([1, 0, 2, 0, 3, 0, 4, 0, 5], dtype=np.float64)
    want = np.concatenate([[0.0], full]) if auto_pad == "SAME_UPPER" else np.concatenate([full, [0.0]])
    np.testing.assert_array_equal(out[0, 0], want)


def test_resolve_pads_valid_and_notset():
    args = dict(in_spatial=[4], kernel=[3], strides=[2], dilations=[1], output_padding=[0],
                pads=[1, 2], output_shape=None)
    assert resolve_pads(auto_pad="NOTSET", **args) == ((1,), (2,))
    assert resolve_pads(auto_pad="VALID", **args) == ((0,), (0,))


# ----- magnitude ------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_magnitude_is_abs_operator_and_bounds_reference(bias):
    spec = ConvTransposeSpec(input_shape=(2, 4, 5, 4), out_channels=4, kernel_shape=(3, 2),
                             strides=(2, 1), pads=(1, 0, 0, 1), output_padding=(1, 0),
                             dilations=(1, 2), group=2, bias=bias)
    assert spec.is_valid
    x, w, b = _random_inputs(spec, 1234)
    mag = reference.magnitude(spec, x, w, b)
    expected = reference.conv_transpose(
        np.abs(x), np.abs(w), None if b is None else np.abs(b), **reference.attributes(spec)
    )
    np.testing.assert_array_equal(mag, expected)
    ref = reference.run_spec(spec, x, w, b)
    assert mag.shape == ref.shape == spec.output_full_shape
    assert np.all(mag >= np.abs(ref))


# ----- validation messages and identity -------------------------------------------------------
def test_group_not_dividing_in_channels():
    spec = ConvTransposeSpec(input_shape=(1, 4, 5, 5), out_channels=3, kernel_shape=(3, 3), group=3)
    assert "group=3 does not divide in_channels=4" in spec.violations()
    assert not spec.is_valid


def test_output_padding_not_below_stride():
    spec = ConvTransposeSpec(input_shape=(1, 1, 5, 5), out_channels=1, kernel_shape=(3, 3),
                             strides=(2, 2), dilations=(1, 1), output_padding=(2, 2))
    violations = spec.violations()
    assert any("output_padding[0]=2" in v for v in violations), violations
    assert not spec.is_valid


def test_output_padding_below_dilation_is_valid():
    spec = ConvTransposeSpec(input_shape=(1, 1, 5, 5), out_channels=1, kernel_shape=(3, 3),
                             strides=(1, 1), dilations=(2, 2), output_padding=(1, 1))
    assert spec.violations() == []
    assert spec.is_valid


def test_spec_errors():
    with pytest.raises(SpecError, match="kernel_shape"):
        ConvTransposeSpec(input_shape=(1, 1, 5, 5), out_channels=1, kernel_shape=(3, 3, 3))
    with pytest.raises(SpecError, match="bfloat16"):
        ConvTransposeSpec(input_shape=(1, 1, 5, 5), out_channels=1, kernel_shape=(3, 3),
                          dtype="bfloat16", opset=17)
    # ONNX: "If output_shape is specified pads values are ignored" -- so they are dropped.
    ignored = ConvTransposeSpec(input_shape=(1, 1, 5, 5), out_channels=1, kernel_shape=(3, 3),
                                pads=(1, 1, 1, 1), output_shape=(9, 9))
    assert ignored.pads == (0, 0, 0, 0) and ignored.output_spatial == (9, 9)
    with pytest.raises(SpecError, match="name must be a string"):
        ConvTransposeSpec(input_shape=(1, 1, 5), out_channels=1, kernel_shape=3, name=7)
    # bfloat16 is fine from opset 22 on.
    ConvTransposeSpec(input_shape=(1, 1, 5, 5), out_channels=1, kernel_shape=(3, 3),
                      dtype="bfloat16", opset=22)


def _k3s2_config(**extra):
    return dict(input_shape=(1, 8, 16, 16), out_channels=4, kernel_shape=(3, 3), strides=(2, 2),
                pads=(1, 1, 1, 1), output_padding=(1, 1), dtype="float32", **extra)


def test_stable_id_and_label():
    a = ConvTransposeSpec(**_k3s2_config())
    b = ConvTransposeSpec(**_k3s2_config())
    named = ConvTransposeSpec(**_k3s2_config(name="decoder.up1"))
    assert a.id == b.id
    assert len(a.id) == 12
    assert named.id == a.id
    assert a.label == "2d-k3s2p1-op1-d1-g1-f32"
    assert named.label == "decoder.up1"
    # Lists and tuples, explicit defaults and omitted ones, give the same id.
    c = ConvTransposeSpec(**{**_k3s2_config(), "kernel_shape": [3, 3], "dilations": [1, 1]})
    assert c.id == a.id
    assert ConvTransposeSpec(**_k3s2_config(group=2)).id != a.id
