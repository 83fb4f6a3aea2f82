"""The GPU backends' accumulation models, judged against real GPU outputs (no GPU needed).

The fixture in tests/data/gpu_h200/ holds outputs measured on an NVIDIA H200 (torch 2.11.0+cu130
with cuDNN 9.19.0, onnxruntime-gpu 1.31.1; its make_fixture.py says how they were chosen): the
results of the default matrix closest to the declared bound and furthest beyond one float32 sum,
240 accumulation probes, and outputs that are genuinely wrong.  Inputs are redrawn exactly from
each config id.  These outputs are the measurement behind `torch-cuda` and `ort-cuda`'s models:
with the models declared before they were measured (one float32 sum) every biased float16 and
bfloat16 result here was a false `drift`.
"""

from __future__ import annotations

import json

import emulation
import ml_dtypes
import numpy as np
import pytest
from helpers import TESTS

from deploykit import backends as registry
from deploykit.backends.base import BuildConfig
from deploykit.onnxio.write import NUMPY_DTYPES, make_inputs
from deploykit.op.bound import OneSum
from deploykit.op.judging import judge_output
from deploykit.op.reference import ExactAnswer
from deploykit.op.spec import ConvTransposeSpec
from deploykit.results.divergences import load as load_known

FIXTURE = TESTS / "data" / "gpu_h200"
CASES = json.loads((FIXTURE / "cases.json").read_text())
OUTPUTS = np.load(FIXTURE / "outputs.npz")
MEASURED = [case for case in CASES["cases"] if not case["key"].startswith("wrong/")]
WRONG = [case for case in CASES["cases"] if case["key"].startswith("wrong/")]
NARROW = [case for case in MEASURED if case["spec"]["dtype"] in ("float16", "bfloat16")]


def _case(case: dict) -> tuple[ConvTransposeSpec, np.ndarray, ExactAnswer, tuple]:
    spec = ConvTransposeSpec.from_dict(case["spec"])
    output = OUTPUTS[case["key"]]
    if spec.dtype == "bfloat16":  # stored as float32, which holds bfloat16 exactly
        output = output.astype(ml_dtypes.bfloat16)
    x, w, b = make_inputs(spec)
    exact = ExactAnswer(spec, x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64))
    models = registry.get(case["backend"]).accumulation(spec.dtype, BuildConfig(case["precision"]))
    return spec, output, exact, models


def test_the_fixture_covers_every_gpu_backend_dtype_and_precision():
    groups = {(c["backend"], c["spec"]["dtype"], c["precision"]) for c in MEASURED}
    assert groups == {("torch-cuda", "float16", "fp32"), ("torch-cuda", "bfloat16", "fp32"), ("ort-cuda", "float16", "fp32"),
                      ("torch-cuda", "float32", "fp32"), ("torch-cuda", "float32", "tf32"),
                      ("ort-cuda", "float32", "fp32"), ("ort-cuda", "float32", "tf32")}
    assert len(MEASURED) >= 100 and WRONG


@pytest.mark.parametrize("case", MEASURED, ids=[c["key"] for c in MEASURED])
def test_every_real_gpu_output_passes_under_the_declared_model(case):
    spec, output, exact, models = _case(case)
    judged = judge_output(spec, output, exact, models)
    assert judged.verdict == "pass", judged.reason


@pytest.mark.parametrize("backend, dtype", [("torch-cuda", "float16"), ("torch-cuda", "bfloat16"), ("ort-cuda", "float16")])
def test_the_models_are_tight_and_were_needed(backend, dtype):
    """Not vacuous: the hardest real outputs use nearly the whole bound.  And needed: under one
    float32 sum, the model declared before the measurement, most of them are false alarms."""
    ratios, float32_only = [], []
    for case in (c for c in NARROW if c["backend"] == backend and c["spec"]["dtype"] == dtype):
        spec, output, exact, models = _case(case)
        ratios.append(judge_output(spec, output, exact, models).drift.bound_ratio)
        float32_only.append(judge_output(spec, output, exact, (OneSum("float32"),)).verdict)
    assert 0.95 <= max(ratios) <= 1, ratios
    assert float32_only.count("drift") >= 5, float32_only


@pytest.mark.parametrize("case", NARROW, ids=[c["key"] for c in NARROW])
def test_each_output_follows_a_declared_order_bit_for_bit(case):
    """torch-cuda: cuDNN's float32 sum rounded to the dtype, then the bias in the dtype.  ort-cuda:
    that, or (asymmetric pads, SAME_*) the bias inside the float32 sum.  The few elements that
    differ are float32 order differences that move a final rounding."""
    spec = ConvTransposeSpec.from_dict(case["spec"])
    x, w, b = make_inputs(spec)
    orders = [emulation.sum_then_bias] + ([emulation.one_float32_sum] if case["backend"] == "ort-cuda" else [])
    output = OUTPUTS[case["key"]].astype(np.float64)
    agreement = max(float(np.mean(order(spec, x, w, b).astype(np.float64) == output)) for order in orders)
    assert agreement >= 0.98, agreement


@pytest.mark.parametrize("case", NARROW, ids=[c["key"] for c in NARROW])
def test_a_real_output_with_a_fault_is_drift(case):
    """The bound stays informative on real outputs: 4 half-ulps on every element, or the output of
    the same order with one kernel tap lost, is a defect the declared model catches."""
    spec, output, exact, models = _case(case)
    dtype = NUMPY_DTYPES[spec.dtype]
    half_ulp = 2.0 ** -(11 if spec.dtype == "float16" else 8)
    shifted = (output.astype(np.float64) * (1 + 4 * half_ulp) + 4 * half_ulp * np.abs(exact.output).max() * (output == 0)).astype(dtype)
    assert judge_output(spec, shifted, exact, models).verdict == "drift"
    x, w, b = make_inputs(spec)
    if spec.in_channels // spec.group * int(exact.tap_count.max()) > 1:
        assert judge_output(spec, emulation.drop_last_tap(spec, x, w, b), exact, models).verdict == "drift"


@pytest.mark.parametrize("case", WRONG, ids=[c["key"] for c in WRONG])
def test_a_genuinely_wrong_output_still_fails_and_is_classified(case):
    spec, output, exact, models = _case(case)
    judged = judge_output(spec, output, exact, models)
    assert judged.verdict == "drift" and judged.drift.bound_ratio > 100
    matches = [d.id for d in load_known() if d.matches(spec, case["backend"], "drift", case["precision"])]
    assert matches == ["ort-output-shape-head-extension"]


def test_the_probes_show_one_rounding_after_a_float32_sum():
    """X = 1; W = 1 at one tap and a quarter of an ulp of 1 elsewhere: a sum in float16/bfloat16
    would lose the quarter ulps (or round each partial sum); both backends return the exact sum
    rounded once to the dtype, on every probe."""
    compared = 0
    for index, probe in enumerate(CASES["probes"]):
        exact = OUTPUTS[f"probe/{index}/exact"].astype(np.float64)
        once = exact.astype(NUMPY_DTYPES[probe["dtype"]]).astype(np.float64)
        for backend in ("torch", "ort"):
            key = f"probe/{index}/{backend}"
            if key in OUTPUTS.files:
                np.testing.assert_array_equal(OUTPUTS[key], once, err_msg=f"{backend} {probe}")
                compared += 1
    assert compared == 240 + 120
