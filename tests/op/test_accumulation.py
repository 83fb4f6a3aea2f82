"""Each backend's accumulation model, measured: emulate its summation order, then judge its bound.

A precision model is only as good as the measurement behind it.  For every (backend, dtype,
code path) the tests below run real configs where the order matters (kernel larger than stride
in 1D, 2D and 3D, bias on and off, grouped), check that the backend's output equals an
emulation of the order its model declares, and check that the declared bound holds with a ratio
that is not vacuous.  torch picks oneDNN or its native kernels by CPU features; the native path
is forced with `torch.backends.mkldnn.flags(enabled=False)`, so both are measured on any machine.
OpenVINO's fp16 paths run only where its CPU plugin applies the f16 hint (OPTIMIZATION_CAPABILITIES
lists FP16: AVX512-FP16 or AMX-FP16); elsewhere they skip with that reason, since the plugin runs
bf16/f32 instead and such a result is `unsupported` (tests/backends/test_precision.py).
TVM sums in the narrow type itself, where the worst case of K roundings grows far beyond real
errors (about sqrt(K) of them) as K grows: its paths, and tinygrad's (whose first run of each
config compiles with clang), are measured on configs with few products per output.
"""

from __future__ import annotations

import contextlib

import emulation
import numpy as np
import pytest
from helpers import skip_unless_openvino_applies, slow_if_compiling

from deploykit import backends as registry
from deploykit.backends.base import BuildConfig
from deploykit.conformance.matrix import load as load_matrix
from deploykit.execution.execute import Executor
from deploykit.onnxio.write import build_case
from deploykit.op.bound import UNIT_ROUNDOFF, OneSum, SumThenBias, error_bound, gamma, smallest_subnormal
from deploykit.op.judging import judge_output
from deploykit.op.reference import ExactAnswer
from deploykit.op.spec import BFLOAT16_MIN_OPSET, ConvTransposeSpec

#: kernel extent > stride everywhere, so several taps reach each output and their order matters
OVERLAPPING = {
    "1d-k7s2": {"input_shape": [1, 16, 9], "out_channels": 8, "kernel_shape": [7], "strides": [2], "pads": [3, 3]},
    "2d-k4s2": {"input_shape": [1, 16, 8, 8], "out_channels": 8, "kernel_shape": [4, 4], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    "2d-k3x5-d2x1-g2": {"input_shape": [1, 8, 6, 5], "out_channels": 6, "kernel_shape": [3, 5], "strides": [1, 2],
                        "dilations": [2, 1], "group": 2},
    "3d-k3s2": {"input_shape": [1, 8, 4, 4, 4], "out_channels": 4, "kernel_shape": [3, 3, 3], "strides": [2, 2, 2], "pads": [1] * 6},
    "2d-k5s1-c64": {"input_shape": [1, 64, 6, 6], "out_channels": 4, "kernel_shape": [5, 5], "pads": [2] * 4},
}
#: the same kinds of overlap with 4 to 36 products per output: where a narrow-type sum's bound still catches a lost tap
FEW_PRODUCTS = {
    "1d-k5s2-c2": {"input_shape": [1, 2, 9], "out_channels": 3, "kernel_shape": [5], "strides": [2], "pads": [2, 2]},
    "2d-k4s2-c2": {"input_shape": [1, 2, 6, 6], "out_channels": 3, "kernel_shape": [4, 4], "strides": [2, 2], "pads": [1] * 4},
    "2d-k3x5-d2x1-g2": OVERLAPPING["2d-k3x5-d2x1-g2"],
    "3d-k3s2-c2": {"input_shape": [1, 2, 4, 4, 4], "out_channels": 2, "kernel_shape": [3, 3, 3], "strides": [2, 2, 2], "pads": [1] * 6},
}
#: backends measured on FEW_PRODUCTS instead of OVERLAPPING
FEW_PRODUCT_BACKENDS = ("tvm-cpu", "tinygrad-cpu")
#: a 1D, a 2D and a 3D config of each set (index: measured on FEW_PRODUCTS)
ONE_PER_RANK = {False: ("1d-k7s2", "2d-k4s2", "3d-k3s2"), True: ("1d-k5s2-c2", "2d-k4s2-c2", "3d-k3s2-c2")}


def _configs(backend: str) -> dict:
    return FEW_PRODUCTS if backend in FEW_PRODUCT_BACKENDS else OVERLAPPING


def _spec(config: str, dtype: str, bias: bool, path: str = "default") -> ConvTransposeSpec:
    opset = {"opset": BFLOAT16_MIN_OPSET} if dtype == "bfloat16" else {}
    weights_as_inputs = "weights-as-inputs" in path.split("+")  # W, B as graph inputs: some runtimes add B apart
    return ConvTransposeSpec.from_dict({**{**OVERLAPPING, **FEW_PRODUCTS}[config], "dtype": dtype, "bias": bias,
                                        "weights_as_inputs": weights_as_inputs, **opset})


def _onednn(enabled: bool):
    torch = pytest.importorskip("torch")
    return torch.backends.mkldnn.flags(enabled=enabled)


def _run(backend_name: str, spec: ConvTransposeSpec, path: str) -> tuple[np.ndarray, ExactAnswer, tuple]:
    backend = registry.get(backend_name)
    availability = backend.probe()
    if not availability.available:
        pytest.skip(f"{backend_name} unavailable: {availability.reason}")
    # A path is `default`, `native` (torch without oneDNN), a build precision such as `fp16`, and/or
    # `weights-as-inputs` (set in the spec), joined by "+".
    precision = next((p for p in path.split("+") if p in ("fp16", "bf16")), "fp32")
    if backend_name == "openvino-cpu" and precision != "fp32":
        skip_unless_openvino_applies(precision)  # elsewhere another precision runs: nothing of this path to measure
    config = BuildConfig(precision)
    case = build_case(spec)
    context = _onednn(False) if path == "native" else contextlib.nullcontext()
    with context:
        runner = backend.load(case, config)
        runner.activate()
        [output] = runner.infer(case.feeds).values()
    return output, ExactAnswer(spec, case.x, case.w, case.b), backend.accumulation(spec.dtype, config)


#: (every config, the best config) floors of paths whose bound leaves more slack, and why
SLACK = {
    # one running sum in float16/bfloat16: the bound charges K worst-case roundings of the sum
    # itself, while real ones partly cancel (about sqrt(K))
    "tvm-cpu": (0.1, 0.25),
    # the model rounds every product to the dtype, to cover each renderer; CLANG, the default,
    # keeps float16 products exact, so that share of the bound stays unused there
    "tinygrad-cpu": (0.05, 0.5),
}


def _floors(backend: str, dtype: str, path: str) -> tuple[float, float]:
    """(every config, the best config) bound_ratio floors.  Where a float32 model is built in a
    narrow precision, the bound charges each of the K products its worst-case operand rounding,
    while real rounding errors partly cancel (they grow about as sqrt(K)): the floors are lower."""
    lowered = dtype == "float32" and any(p in ("fp16", "bf16") for p in path.split("+"))
    return (0.02, 0.3) if lowered else SLACK.get(backend, (0.05, 0.75))


def _agreement(output: np.ndarray, emulated: np.ndarray) -> float:
    return float(np.mean(output.astype(np.float64) == emulated.astype(np.float64)))


#: (backend, dtype, code path, emulation of the order measured on it)
MEASURED = [
    ("ort-cpu", "float16", "default", emulation.one_float32_sum),
    ("onnx-reference", "float16", "default", emulation.tap_sums),
    ("onnx-reference", "bfloat16", "default", emulation.one_float32_sum),
    ("torch-cpu", "float16", "native", emulation.tap_sums),
    ("torch-cpu", "bfloat16", "native", emulation.tap_sums),
    ("openvino-cpu", "float16", "default", emulation.one_float32_sum),
    ("openvino-cpu", "bfloat16", "default", emulation.one_float32_sum),
    ("openvino-cpu", "float16", "weights-as-inputs", emulation.one_float32_sum),  # the f32 hint upcasts float16
    ("openvino-cpu", "float16", "fp16", emulation.one_float32_sum),  # native f16 kernel, bias fused
    ("openvino-cpu", "float16", "fp16+weights-as-inputs", emulation.sum_then_bias),  # a separate f16 Add
    ("openvino-cpu", "bfloat16", "weights-as-inputs", emulation.sum_then_bias),  # a separate bf16 Add
    ("openvino-cpu", "float32", "fp16", emulation.lowered(emulation.one_float32_sum, np.float16)),
    ("tract-cpu", "float16", "default", emulation.tap_sums_bias_first),
    ("tract-cpu", "float32", "fp16", emulation.lowered(emulation.tap_sums_bias_first, np.float16)),
    ("tvm-cpu", "float16", "default", emulation.running_sum_in_dtype),
    ("tvm-cpu", "bfloat16", "default", emulation.running_sum_of_exact_products),
    ("tinygrad-cpu", "float16", "default", emulation.sum_then_bias),  # CLANG: exact products
    ("tinygrad-cpu", "bfloat16", "default", emulation.sum_of_rounded_products_then_bias),
]


def _measured_cases():
    for backend, dtype, path, emulate in MEASURED:
        for config in _configs(backend):
            if backend == "onnx-reference" and "g2" in config:
                continue  # grouped cases are a known divergence of onnx.reference
            for bias in (True, False):
                yield pytest.param(backend, dtype, path, emulate, config, bias, marks=slow_if_compiling(backend),
                                   id=f"{backend}-{dtype}-{path}-{config}-{'bias' if bias else 'nobias'}")


@pytest.mark.parametrize("backend, dtype, path, emulate, config, bias", list(_measured_cases()))
def test_backend_follows_its_declared_order_and_its_bound_holds_tightly(backend, dtype, path, emulate, config, bias):
    spec = _spec(config, dtype, bias, path)
    output, exact, models = _run(backend, spec, path)
    case = build_case(spec)
    emulated = emulate(spec, case.x, case.w, case.b)
    # The order: the backend's output equals the emulation almost everywhere (the few exceptions
    # are float32 GEMM-order differences that change a final rounding).
    assert _agreement(output, emulated) >= 0.99, f"{backend} {dtype} no longer sums as {emulate.__name__}"
    judged = judge_output(spec, output, exact, models)
    assert judged.verdict == "pass", judged.reason
    # Not vacuous: the error uses a fair part of the bound (worst-case sums of 25 taps leave the
    # most slack; test_the_bound_is_nearly_reached_on_each_path shows the tight end).
    assert judged.drift.bound_ratio >= _floors(backend, dtype, path)[0], judged.drift.bound_ratio
    # The same order with one kernel tap lost is a defect the bound catches.
    broken = emulation.drop_last_tap(spec, case.x, case.w, case.b)
    assert judge_output(spec, broken, exact, models).verdict == "drift"


@pytest.mark.parametrize("backend, dtype, path, emulate", [pytest.param(*m, marks=slow_if_compiling(m[0]), id=f"{m[0]}-{m[1]}-{m[2]}") for m in MEASURED])
def test_the_bound_is_nearly_reached_on_each_path(backend, dtype, path, emulate):
    ratios = []
    for config in ONE_PER_RANK[backend in FEW_PRODUCT_BACKENDS]:
        spec = _spec(config, dtype, True, path)
        output, exact, models = _run(backend, spec, path)
        ratios.append(judge_output(spec, output, exact, models).drift.bound_ratio)
    assert _floors(backend, dtype, path)[1] <= max(ratios) <= 1, ratios


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_torch_default_path_is_one_of_its_declared_orders(dtype):
    """On CPUs with native float16/bfloat16 support torch takes oneDNN (one float32 sum);
    elsewhere its native kernel (tap sums).  Either way the output is one of the two."""
    for config in OVERLAPPING:
        for bias in (True, False):
            spec = _spec(config, dtype, bias)
            output, exact, models = _run("torch-cpu", spec, "default")
            case = build_case(spec)
            agreements = [_agreement(output, emulate(spec, case.x, case.w, case.b))
                          for emulate in (emulation.one_float32_sum, emulation.tap_sums)]
            assert max(agreements) >= 0.99, (config, bias, agreements)
            assert judge_output(spec, output, exact, models).verdict == "pass"


def test_torch_native_path_does_need_the_tap_sum_model():
    """Without its tap-sum model, torch's healthy native float16 output would be a false drift:
    the float32 ratio is above 1, and the result records it."""
    spec = _spec("1d-k7s2", "float16", bias=False)
    output, exact, models = _run("torch-cpu", spec, "native")
    float32_only = judge_output(spec, output, exact, (OneSum("float32"),))
    assert float32_only.verdict == "drift"
    judged = judge_output(spec, output, exact, models)
    assert judged.verdict == "pass"
    assert judged.float32_sum_ratio == pytest.approx(float32_only.drift.bound_ratio)


def test_ort_float16_bound_is_tight_and_catches_a_perturbation():
    ratios = []
    for config in OVERLAPPING:
        spec = _spec(config, "float16", bias=True)
        output, exact, models = _run("ort-cpu", spec, "default")
        ratios.append(judge_output(spec, output, exact, models).drift.bound_ratio)
        perturbed = (output.astype(np.float64) * (1 + 4 * 2.0**-11)).astype(np.float16)  # 4 half-ulps
        assert judge_output(spec, perturbed, exact, models).verdict == "drift"
    assert 0.25 <= min(ratios) and max(ratios) <= 1, ratios  # lowest: 1,600 products per output


@pytest.mark.slow
def test_default_matrix_float16_passes_on_torch_native_path():
    """The false alarm users met on CPUs without AVX512-FP16: every float16 config of the default
    matrix on torch's native kernels (forced here on any CPU) is `pass` or documented non-support."""
    executor = Executor(known=[])
    specs = [s for s in load_matrix("default").specs if s.dtype == "float16"]
    assert len(specs) > 100
    with _onednn(False):
        verdicts = {s.label: executor.run(s, "torch-cpu") for s in specs}
    bad = {label: r.reason for label, r in verdicts.items() if r.verdict not in ("pass", "unsupported")}
    assert not bad, bad
    assert any((r.float32_sum_ratio or 0) > 1 for r in verdicts.values()), "the native path sums taps in float16"


def test_one_sum_counts_only_the_products_that_reach_each_element():
    """Kernel 3, stride 3: one tap reaches each output, so K is C/group (+1 for the bias), not
    C/group * 3: the zeros a runtime multiplies for the other taps round nothing."""
    spec = ConvTransposeSpec((1, 8, 4), 2, (3,), strides=3, dtype="float16")
    case = build_case(spec)
    exact = ExactAnswer(spec, case.x, case.w, case.b)
    u, u_out = UNIT_ROUNDOFF["float32"], UNIT_ROUNDOFF["float16"]
    summed = gamma(8 + 1, u) * (exact.product_magnitude + exact.bias_magnitude)
    expected = (1 + u_out) * summed + u_out * np.abs(exact.output) + smallest_subnormal("float16")
    np.testing.assert_allclose(error_bound(spec, exact, [OneSum("float32")]), expected, rtol=1e-12)


def test_a_bound_that_is_infinite_somewhere_is_unsupported_never_pass():
    """A bfloat16 sum of 256 or more products has no finite worst-case bound (K u >= 1): any output
    would pass, so deploykit says it cannot judge instead."""
    spec = _spec("2d-k5s1-c64", "bfloat16", bias=True)  # 25 taps x 64 channels reach the centre
    case = build_case(spec)
    exact = ExactAnswer(spec, case.x, case.w, case.b)
    judged = judge_output(spec, exact.output.astype(np.float32), exact, (OneSum("bfloat16"),))
    assert judged.verdict == "unsupported"
    assert "gives no finite rounding-error bound here (K u >= 1)" in judged.reason
    assert "(one bfloat16 sum)" in judged.reason
    # a real error where the bound is finite is still drift
    broken = emulation.drop_last_tap(spec, case.x, case.w, case.b)
    assert judge_output(spec, broken, exact, (OneSum("float32"),)).verdict == "drift"


@pytest.mark.slow
def test_tvm_bfloat16_with_many_products_is_unsupported():
    spec = _spec("2d-k5s1-c64", "bfloat16", bias=False)
    output, exact, models = _run("tvm-cpu", spec, "default")
    assert models == (OneSum("bfloat16"),)
    assert judge_output(spec, output, exact, models).verdict == "unsupported"


@pytest.mark.slow
def test_tinygrad_needs_its_model_rounding_before_the_bias_and_each_product():
    """One float32 sum misses tinygrad's rounding to the dtype before the bias (float16), and a
    model with exact products misses its bfloat16 products: both would be false drift."""
    spec = _spec("2d-k4s2-c2", "float16", bias=True)
    output, exact, models = _run("tinygrad-cpu", spec, "default")
    assert judge_output(spec, output, exact, (OneSum("float32"),)).verdict == "drift"
    assert judge_output(spec, output, exact, models).verdict == "pass"
    spec = _spec("2d-k4s2-c2", "bfloat16", bias=False)
    output, exact, models = _run("tinygrad-cpu", spec, "default")
    assert judge_output(spec, output, exact, (SumThenBias("float32", "bfloat16"),)).verdict == "drift"
    assert models == (SumThenBias("float32", "bfloat16", rounded_products=True),)
    assert judge_output(spec, output, exact, models).verdict == "pass"
