"""The verdict logic: rigorous bound, no false alarms on healthy low precision, real drift caught."""

import numpy as np
import pytest

from deploykit.execution.execute import Executor
from deploykit.onnxio.write import build_case
from deploykit.op.bound import OneSum, error_bound, gamma
from deploykit.op.judging import Tolerance, judge_output, measure, ulp_distance
from deploykit.op.reference import ExactAnswer
from deploykit.op.spec import ConvTransposeSpec

DECODER_F32 = ConvTransposeSpec((1, 32, 8, 8), 16, (4, 4), strides=2, pads=1)
FLOAT32 = (OneSum("float32"),)
FLOAT64 = (OneSum("float64"),)


def _answers(spec):
    case = build_case(spec)
    exact = ExactAnswer(spec, case.x, case.w, case.b)
    return exact.output, exact


def test_gamma_is_higham_gamma():
    assert gamma(10, 2.0**-24) == pytest.approx(10 * 2.0**-24 / (1 - 10 * 2.0**-24))
    assert gamma(2**24, 2.0**-24) == float("inf")


def test_ulp_distance_counts_representable_steps():
    one = np.array([1.0], dtype=np.float32)
    assert ulp_distance(np.nextafter(one, np.float32(2)), one.astype(np.float64), "float32") == 1
    # Across zero: -tiny to +tiny is two steps.
    tiny = np.array([np.finfo(np.float16).smallest_subnormal], dtype=np.float16)
    assert ulp_distance(-tiny, tiny.astype(np.float64), "float16") == 2


def test_reference_rounded_to_float32_passes():
    reference, size = _answers(DECODER_F32)
    judged = judge_output(DECODER_F32, reference.astype(np.float32), size, FLOAT32)
    verdict, reason, drift = judged.verdict, judged.reason, judged.drift
    assert verdict == "pass", reason
    assert drift.bound_ratio <= 1 and drift.max_ulp_err == 0


def test_float32_perturbed_by_1e_3_relative_is_drift():
    reference, size = _answers(DECODER_F32)
    perturbed = (reference * (1 + 1e-3)).astype(np.float32)
    judged = judge_output(DECODER_F32, perturbed, size, FLOAT32)
    verdict, reason, drift = judged.verdict, judged.reason, judged.drift
    assert verdict == "drift"
    assert drift.bound_ratio > 1
    assert "rounding-error bound" in reason


def test_healthy_float16_on_ort_cpu_is_pass_not_a_false_alarm():
    spec = ConvTransposeSpec((1, 64, 16, 16), 32, (4, 4), strides=2, pads=1, dtype="float16")
    result = Executor(known=[]).run(spec, "ort-cpu")
    assert result.verdict == "pass", result.reason
    assert 0.3 <= result.bound_ratio <= 1, result.bound_ratio  # tight, not vacuous
    # The same errors are far beyond any float32 expectation: the dtype-aware bound is what passes them.
    assert result.max_rel_err > 1e-4


def test_tolerance_override_replaces_the_bound():
    reference, size = _answers(DECODER_F32)
    perturbed = (reference * (1 + 1e-3)).astype(np.float32)
    assert judge_output(DECODER_F32, perturbed, size, FLOAT32, Tolerance(atol=1e-2)).verdict == "pass"
    assert judge_output(DECODER_F32, perturbed, size, FLOAT32, Tolerance(rtol=1e-4)).verdict == "drift"


def test_shape_mismatch_and_nonfinite():
    reference, size = _answers(DECODER_F32)
    judged = judge_output(DECODER_F32, reference[:, :, :-1], size, FLOAT32)
    verdict, reason = judged.verdict, judged.reason
    assert verdict == "shape-mismatch" and "[1, 16, 16, 16]" in reason
    broken = reference.astype(np.float32)
    broken[0, 0, 0, 0] = np.nan
    assert judge_output(DECODER_F32, broken, size, FLOAT32).verdict == "nonfinite"


def test_bound_never_zero_so_underflow_is_not_flagged():
    spec = ConvTransposeSpec((1, 1, 2), 1, (1,), dtype="float16", bias=False)
    zeros = np.zeros(spec.output_full_shape)
    silent = ExactAnswer(spec, np.zeros(spec.input_shape), np.zeros(spec.weight_shape), None)
    bound = error_bound(spec, silent, FLOAT32)
    assert (bound > 0).all()
    drift = measure(np.full(spec.output_full_shape, 1e-8, dtype=np.float16), zeros, bound, "float16")
    assert drift.bound_ratio <= 1


def test_float64_error_where_nothing_reaches_an_output_is_still_drift():
    """k1 s3 without bias leaves outputs no product reaches: their bound must not be 0/0."""
    spec = ConvTransposeSpec((1, 2, 4), 2, (1,), strides=3, bias=False, dtype="float64")
    reference, size = _answers(spec)
    assert (size.magnitude == 0).any()
    judged = judge_output(spec, reference * 1.01, size, FLOAT64)
    verdict, drift = judged.verdict, judged.drift
    assert verdict == "drift" and drift.bound_ratio > 1


def test_float64_ulp_distance_across_signs_does_not_overflow():
    assert ulp_distance(np.array([-2.0]), np.array([2.0]), "float64") == 2 * 0x4000000000000000


def _tf32(array: np.ndarray) -> np.ndarray:
    """Round float32 values to TF32's 10-bit mantissa (round to nearest even on the dropped 13 bits)."""
    bits = array.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x0FFF + ((bits >> 13) & 1)) & ~np.uint64(0x1FFF)
    return rounded.astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("spec", [DECODER_F32, ConvTransposeSpec((1, 256, 8, 8), 128, (4, 4), strides=2, pads=1)],
                         ids=["decoder-32ch", "decoder-256ch"])
@pytest.mark.parametrize("lower", ["float16 operands", "tf32 operands"])
def test_float32_model_computed_with_narrower_operands_is_drift(spec, lower):
    """The silent precision loss a float32 deployment must never pass: a kernel that rounds the
    operands to float16 or TF32 (an unrequested fast path) while summing in float32."""
    from deploykit.op.reference import run_spec

    case = build_case(spec)
    exact = ExactAnswer(spec, case.x, case.w, case.b)
    narrow = (lambda a: a.astype(np.float16).astype(np.float64)) if lower == "float16 operands" else (lambda a: _tf32(a).astype(np.float64))
    computed = run_spec(spec, narrow(case.x), narrow(case.w), case.b.astype(np.float64)).astype(np.float32)
    judged = judge_output(spec, computed, exact, FLOAT32)
    assert judged.verdict == "drift", (judged.reason, judged.drift.bound_ratio)
