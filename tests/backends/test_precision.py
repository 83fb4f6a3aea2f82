"""A build precision is reported as tested only where the runtime applied it.

After `activate()` a runner may read back what the runtime applied (`applied_precision`); the one
execution path turns a precision that did not run into `unsupported`, keeping the requested
precision as the result's identity and saying what ran instead.  The contract is checked with fake
runners (everywhere); OpenVINO's and tract's read-backs with fakes of their built models
(everywhere) and with the real runtimes, on the CPU at hand: a check that needs a CPU feature
skips with OpenVINO's own reason where the feature is missing, and runs where it is present.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from helpers import skip_unless_openvino_applies

from deploykit import backends as registry
from deploykit.backends import cpu_features
from deploykit.backends.base import AppliedPrecision, Availability, Backend, BuildConfig, CallableRunner, Capabilities, precision_not_applied
from deploykit.backends.openvino import OpenVinoRunner
from deploykit.backends.reference import ReferenceBackend
from deploykit.backends.tract import TractRunner
from deploykit.execution.execute import Executor, run_backend
from deploykit.onnxio.write import build_case
from deploykit.op.spec import ConvTransposeSpec

LAYER = ConvTransposeSpec((1, 8, 6, 6), 4, (4, 4), strides=2, pads=1)
NO_FP16 = ("BF16", "WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT")  # what OpenVINO lists on an AVX512-BF16 CPU


class ReadBackRunner(CallableRunner):
    """The reference's arithmetic in a runtime that builds anything (spec-invalid models too),
    reports `applied` and counts its inferences."""

    def __init__(self, inner, applied: AppliedPrecision | None) -> None:
        super().__init__(inner.infer)
        self.applied, self.calls = applied, 0

    def infer(self, feeds):
        self.calls += 1
        return super().infer(feeds)

    def applied_precision(self) -> AppliedPrecision | None:
        return self.applied


class ReadBackBackend(Backend):
    """A backend offering fp16 whose runtime reports `applied` after building."""

    name = "readback"

    def __init__(self, applied: AppliedPrecision | None) -> None:
        self.capabilities = Capabilities(precisions=("fp32", "fp16"))
        self.applied = applied
        self.runners: list[ReadBackRunner] = []

    def probe(self) -> Availability:
        return Availability(True, "1")

    def load(self, case, config):
        self.runners.append(ReadBackRunner(ReferenceBackend().load(case, config), self.applied))
        return self.runners[-1]


RAN_BF16 = AppliedPrecision("bf16", "the engine reads back bf16", "this CPU has no float16 arithmetic")


def test_a_precision_the_runtime_did_not_apply_is_unsupported_and_nothing_runs():
    backend = ReadBackBackend(RAN_BF16)
    outcome = run_backend(backend, backend.probe(), build_case(LAYER), BuildConfig("fp16"))
    assert outcome.status == "unsupported"
    assert outcome.reason == "fp16 not applied: the engine reads back bf16; this CPU has no float16 arithmetic"
    assert backend.runners[0].calls == 0 and outcome.outputs == {}


@pytest.mark.parametrize("applied", [AppliedPrecision("fp16", "the engine reads back fp16"), None],
                         ids=["applied", "cannot-tell"])
def test_a_precision_applied_or_not_read_back_is_judged(applied):
    backend = ReadBackBackend(applied)
    outcome = run_backend(backend, backend.probe(), build_case(LAYER), BuildConfig("fp16"))
    assert outcome.status == "ok" and backend.runners[0].calls == 1


def test_a_runner_without_a_read_back_keeps_working():
    """The method is optional: a backend written before it (CallableRunner here) runs as before."""
    backend = registry.get("reference")
    outcome = run_backend(backend, backend.probe(), build_case(LAYER), BuildConfig())
    assert outcome.status == "ok"


@pytest.mark.parametrize("expect", ["accept", "reject"])
def test_the_stored_row_keeps_the_requested_precision_and_says_what_ran(expect):
    spec = LAYER if expect == "accept" else LAYER.replace(pads=(1, 1, 1, 1), auto_pad="SAME_UPPER", expect="reject")
    executor = Executor(known=[])
    backend = ReadBackBackend(RAN_BF16)
    executor._backends["readback"] = (backend, backend.probe())
    result = executor.run(spec, "readback", precision="fp16")
    assert (result.precision, result.verdict) == ("fp16", "unsupported")
    assert result.reason == "fp16 not applied: the engine reads back bf16; this CPU has no float16 arithmetic"


def test_precision_not_applied_names_what_ran():
    assert precision_not_applied("fp16", None) is None
    assert precision_not_applied("fp16", AppliedPrecision("fp16", "x")) is None
    assert precision_not_applied("bf16", AppliedPrecision("fp32", "its layer runs f32")) == "bf16 not applied: its layer runs f32"


def test_openvino_lacks_a_precision_its_capabilities_do_not_list():
    assert cpu_features.openvino_lacks("fp16", NO_FP16) == (
        "this CPU has no float16 arithmetic (OPTIMIZATION_CAPABILITIES: BF16, WINOGRAD, FP32, INT8, BIN, EXPORT_IMPORT)")
    assert cpu_features.openvino_lacks("bf16", NO_FP16) is None
    assert cpu_features.openvino_lacks("bf16", ("FP32", "FP16")).startswith("this CPU has no bfloat16 arithmetic")
    assert cpu_features.openvino_lacks("fp32", ("FP32",)) is None


# --- OpenVINO's read-back on fakes of its compiled model (no OpenVINO needed) ---

class _Value:
    def __init__(self, text: str) -> None:
        self.text = text

    def astype(self, kind):
        return self.text


def _fake_compiled(hint: str | None, deconvolution: str):
    """A compiled model whose INFERENCE_PRECISION_HINT reads `hint` (None: the property is missing)
    and whose runtime model runs one Deconvolution in `deconvolution`."""
    def get_property(name):
        if hint is None:
            raise RuntimeError(f"Unsupported property {name} by CPU plugin")
        return SimpleNamespace(get_type_name=lambda: hint)

    info = {"layerType": _Value("Deconvolution"), "primitiveType": _Value("jit"), "runtimePrecision": _Value(deconvolution)}
    op = SimpleNamespace(get_rt_info=lambda: info)
    runtime_model = SimpleNamespace(get_ordered_ops=lambda: [op])
    return SimpleNamespace(get_property=get_property, get_runtime_model=lambda: runtime_model)


def _read_back(precision: str, compiled) -> AppliedPrecision | None:
    runner = OpenVinoRunner(lambda: compiled, precision)
    runner.compiled = compiled
    return runner.applied_precision()


def test_openvino_bf16_read_back_for_an_f16_request_is_unsupported(monkeypatch):
    monkeypatch.setattr(cpu_features, "openvino_capabilities", lambda: NO_FP16)
    applied = _read_back("fp16", _fake_compiled("bf16", "f32"))
    assert precision_not_applied("fp16", applied) == (
        "fp16 not applied: OpenVINO's compiled model reads back INFERENCE_PRECISION_HINT bf16 for the f16 hint"
        " (its Deconvolution runs f32); this CPU has no float16 arithmetic"
        " (OPTIMIZATION_CAPABILITIES: BF16, WINOGRAD, FP32, INT8, BIN, EXPORT_IMPORT)")


def test_openvino_hint_that_held_but_left_the_deconvolution_in_f32_is_unsupported():
    applied = _read_back("bf16", _fake_compiled("bf16", "f32"))
    assert precision_not_applied("bf16", applied) == (
        "bf16 not applied: OpenVINO's compiled model reads back INFERENCE_PRECISION_HINT bf16 for the bf16 hint,"
        " but its Deconvolution runs f32")


@pytest.mark.parametrize("precision, hint, deconvolution", [
    ("fp16", "f16", "f16"),
    ("bf16", "bf16", "bf16"),
    ("fp32", "f32", "bf16"),  # a bfloat16 model at fp32: its own type runs, which is what fp32 means
    ("fp32", "f32", "f32"),
])
def test_openvino_precision_that_held_is_applied(precision, hint, deconvolution):
    assert precision_not_applied(precision, _read_back(precision, _fake_compiled(hint, deconvolution))) is None


def test_openvino_without_the_property_cannot_tell():
    assert _read_back("fp16", _fake_compiled(None, "f32")) is None


# --- tract's read-back on its typed model's facts (no tract needed) ---

@pytest.mark.parametrize("facts, verdict", [
    (["1,8,6,6,f16"], None),
    (["1,8,6,6,f16", "8,4,4,4,f16", "4,f16"], None),
    (["1,8,6,6,f64"], ("fp16 not applied: tract's typed model takes f64 inputs after its FloatPrecision f32 -> f16"
                       " transform; the transform lowers float32 only")),
])
def test_tract_reads_back_what_its_transform_did(facts, verdict):
    runner = TractRunner(lambda: (facts, None), build_case(LAYER), "fp16")
    runner.activate()
    assert precision_not_applied("fp16", runner.applied_precision()) == verdict
    assert TractRunner(lambda: (facts, None), build_case(LAYER), "fp32").applied_precision() is None


# --- the real runtimes, on this CPU ---

def _available(name: str) -> Backend:
    backend = registry.get(name)
    availability = backend.probe()
    if not availability.available:
        pytest.skip(f"{name} unavailable: {availability.reason}")
    return backend


def test_openvino_fp16_on_a_cpu_without_float16_is_unsupported_with_the_reason():
    _available("openvino-cpu")
    lacking = cpu_features.openvino_lacks("fp16")
    if lacking is None:
        pytest.skip("OpenVINO lists FP16 in OPTIMIZATION_CAPABILITIES here: it applies the f16 hint, and fp16 rows"
                    " are judged (tests/op/test_accumulation.py measures them)")
    for dtype in ("float32", "float16"):
        result = Executor(known=[]).run(LAYER.replace(dtype=dtype), "openvino-cpu", precision="fp16")
        assert (result.precision, result.verdict) == ("fp16", "unsupported"), result.reason
        assert result.reason.startswith("fp16 not applied: OpenVINO's compiled model reads back INFERENCE_PRECISION_HINT")
        assert result.reason.endswith(lacking)


def test_openvino_fp16_where_the_cpu_has_it_is_judged():
    _available("openvino-cpu")
    skip_unless_openvino_applies("fp16")
    result = Executor(known=[]).run(LAYER, "openvino-cpu", precision="fp16")
    assert result.verdict == "pass", result.reason


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_openvino_hint_read_back_agrees_with_its_capabilities(precision):
    """Two views from OpenVINO itself: the compiled hint holds exactly where the capability is listed."""
    backend = _available("openvino-cpu")
    runner = backend.load(build_case(LAYER), BuildConfig(precision))
    runner.activate()
    hint_held = runner._compiled_hint() == {"fp16": "f16", "bf16": "bf16"}[precision]
    assert hint_held == (cpu_features.openvino_lacks(precision) is None), runner._compiled_hint()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_openvino_bf16_is_a_pass_only_where_its_deconvolution_ran_bf16(dtype):
    """Under the bf16 hint OpenVINO may keep the Deconvolution in f32 (measured on AVX512-BF16 CPUs):
    such a row is `unsupported`, never a pass against a bound made for bf16 operands."""
    backend = _available("openvino-cpu")
    spec = LAYER.replace(dtype=dtype)
    result = Executor(known=[]).run(spec, "openvino-cpu", precision="bf16")
    runner = backend.load(build_case(spec), BuildConfig("bf16"))
    runner.activate()
    ran = {kind for layer, _, kind in runner.executed_kernels() if layer == "Deconvolution"}
    if ran == {"bf16"} and runner._compiled_hint() == "bf16":
        assert result.verdict == "pass", result.reason
    else:
        assert result.verdict == "unsupported" and result.reason.startswith("bf16 not applied: "), result.reason


@pytest.mark.slow
def test_tract_fp16_lowers_float32_and_leaves_float64_unsupported():
    _available("tract-cpu")
    executor = Executor(known=[])
    assert executor.run(LAYER, "tract-cpu", precision="fp16").verdict == "pass"
    result = executor.run(LAYER.replace(dtype="float64"), "tract-cpu", precision="fp16")
    assert (result.precision, result.verdict) == ("fp16", "unsupported")
    assert "tract's typed model takes f64 inputs" in result.reason
