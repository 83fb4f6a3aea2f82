"""Every known divergence's hazard predicate held against what its backend does.

`deploykit lint` reports an entry of conformance/known_divergences.yaml wherever the entry's hazard
predicate matches a layer, and `conformance run` marks a failure `known` when it does; both are
only as right as the predicate.  For EVERY entry, here:

- its documented minimal case (the config of its `repro:` block, the one conformance/repros/<id>/
  is written from, else MINIMAL below) is matched by its predicate;
- on the one-attribute neighbours of every minimal case, and on configs drawn by the fuzz
  strategies, run on each of the entry's backends that this machine has:
  - narrow: a failure is explained by an entry whose predicate matches the config (else a
    predicate is narrower than its failure, or the failure is new);
  - wide: a config an entry's predicate matches shows one of the entry's verdicts, or a verdict
    another matching entry explains (a refusal that comes first) — unless the entry's reason
    says its hazard is "wider than" the failure.

Verdicts are judged as `conformance run` judges them: in this process for the backends that run a
config in milliseconds (except the configs an entry says crash them, which run in worker
processes), in the run's worker processes for tract (a panic aborts the process), TVM and tinygrad
(marked slow).  Entries measured with one CPU's kernels (oneDNN's AMX bfloat16 paths)
are held to the wide check only on a CPU with that feature: other CPUs run other kernels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import NEEDS_CPU_FLAG
from hypothesis import HealthCheck, Phase, given, settings

from deploykit import backends as registry
from deploykit.backends import cpu_features
from deploykit.execution.execute import Executor
from deploykit.execution.harness import Task, WorkerOptions, run_tasks
from deploykit.fuzz.strategies import specs
from deploykit.lint import SHAPE_INFERENCE, findings_for
from deploykit.onnxio.write import build_case, inferred_output_shape
from deploykit.op.hazards import HAZARDS
from deploykit.op.spec import BFLOAT16_MIN_OPSET, SpecError
from deploykit.op.spec import ConvTransposeSpec as Spec
from deploykit.results.divergences import EXPLAINABLE, Divergence, load, version_in

TABLE = load()
#: Minimal cases of the entries that have no `repro:` block: the configs their reasons describe.
MINIMAL: dict[str, list[Spec]] = {
    "ort-output-padding-ge-stride": [Spec((1, 1, 3), 1, (3,), dilations=2, output_padding=1)],
    "onnx-reference-output-padding-ge-stride": [Spec((1, 1, 3), 1, (3,), dilations=2, output_padding=1)],
    "ort-same-negative-padding": [Spec((1, 1, 2), 1, (1,), strides=2, auto_pad="SAME_UPPER")],
    "onnx-reference-grouped": [
        Spec((1, 2, 3), 2, (2,), group=2),  # depthwise + bias: group 0's bias everywhere
        Spec((1, 2, 3), 4, (2,), group=2, bias=False),  # M/group = 2: reshape error
        Spec((1, 4, 3), 2, (2,), group=2, bias=False),  # C/group = 2: reshape error
    ],
    "onnx-reference-output-shape-padding": [Spec((1, 1, 3), 1, (3,), output_shape=(4,))],
    "shape-inference-same-output-padding": [Spec((1, 1, 2), 1, (3,), strides=2, output_padding=1, auto_pad="SAME_UPPER")],
    "shape-inference-same-negative-padding": [Spec((1, 1, 2), 1, (1,), strides=2, auto_pad="SAME_UPPER")],
    "tensorrt-output-shape-split": [Spec((1, 1, 3), 1, (3,), strides=2, output_shape=(6,))],
}
#: Backends that run a config in milliseconds; tract (one process per config) and TVM (a compile
#: per config) take about a second and run in the slow tests.
FAST = ("onnx-reference", "ort-cpu", "torch-cpu", "openvino-cpu", SHAPE_INFERENCE)
SLOW = ("tract-cpu", "tvm-cpu", "tinygrad-cpu")
NOT_RUN = ("unsupported", "unavailable")
REFUSALS = {"rejected", "crash"}
WIDER = "wider than"


# ----- the documented minimal case of each entry -----------------------------------------------
def minimal_cases(entry: Divergence) -> list[Spec]:
    """The config of the entry's `repro:` block (its repro folder is written from it), else MINIMAL's."""
    if entry.repro is not None:
        return [entry.repro.config]
    return MINIMAL.get(entry.id, [])


def test_minimal_is_only_for_entries_without_a_repro_block():
    """One source per minimal case: an entry with a `repro:` block is not listed again here."""
    assert not [entry.id for entry in TABLE if entry.repro is not None and entry.id in MINIMAL]


@pytest.mark.parametrize("entry", TABLE, ids=[e.id for e in TABLE])
def test_each_entry_has_a_minimal_case_its_predicate_matches(entry):
    cases = minimal_cases(entry)
    assert cases, f"{entry.id}: no minimal case; add a `repro:` block to the entry or a MINIMAL entry in {Path(__file__).name}"
    for spec in cases:
        assert spec is not None and HAZARDS[entry.hazard].applies(spec), f"{entry.id}: {entry.hazard} misses {spec}"


# ----- what a backend does, and what the table says about it ---------------------------------------
def _available(backend: str) -> bool:
    return backend == SHAPE_INFERENCE or registry.get(backend).probe().available


def _shape_inference_verdict(spec: Spec) -> str:
    """ONNX shape inference is judged on the output shape alone."""
    inferred = inferred_output_shape(build_case(spec).model) if spec.expect == "accept" else None
    return "shape-mismatch" if inferred is not None and list(inferred) != list(spec.output_full_shape) else "pass"


def observe(pairs: list[tuple[str, Spec]], isolated: bool) -> list[tuple[str, Spec, str, str | None]]:
    """(backend, config, verdict, backend version) for each pair, judged as `conformance run` judges
    it: in this process, or (`isolated`) in the run's worker processes, where a runtime that aborts
    the process costs one task and its verdict is `crash`."""
    seen = [(backend, spec, _shape_inference_verdict(spec), None) for backend, spec in pairs if backend == SHAPE_INFERENCE]
    pairs = [(backend, spec) for backend, spec in pairs if backend != SHAPE_INFERENCE]
    in_workers, in_process = [], []
    for backend, spec in pairs:
        (in_workers if isolated or _may_crash(backend, spec) else in_process).append((backend, spec))
    executor = Executor(known=TABLE)
    results = [executor.run(spec, backend) for backend, spec in in_process]
    if in_workers:
        run_tasks([Task(spec, backend) for backend, spec in in_workers], results.append, jobs=2, timeout=120,
                  options=WorkerOptions(preload=tuple({backend for backend, _ in in_workers})))
    return seen + [(r.backend, Spec.from_dict(r.spec), r.verdict, r.backend_version) for r in results]


def _may_crash(backend: str, spec: Spec) -> bool:
    """A config an entry says kills `backend` (on some CPUs: OpenVINO's AMX bfloat16 kernels) runs in a
    worker process even among the fast backends, so a crash costs one task, not the test process."""
    return any("crash" in e.verdicts and backend in e.backends and HAZARDS[e.hazard].applies(spec) for e in TABLE)


def _concerns(entry: Divergence, spec: Spec) -> bool:
    """Whether `spec` is a config the entry speaks of.  On an invalid model a runtime is right to
    refuse, wrong to run it (`accepted-invalid`) or to die (`crash`); on a valid one every verdict
    but `accepted-invalid` can show."""
    if spec.expect == "reject":
        return bool({"accepted-invalid", "crash"} & set(entry.verdicts))
    return bool(set(entry.verdicts) - {"accepted-invalid"})


def _too_wide(entry: Divergence, spec: Spec, seen: str, applying: list[Divergence]) -> bool:
    """The entry's predicate matches `spec` but the backend shows nothing the table explains."""
    if seen in entry.verdicts or seen in NOT_RUN or not _concerns(entry, spec):
        return False
    others = [f for f in applying if f is not entry]
    if seen != "pass" and any(seen in f.verdicts for f in others):
        return False  # another matching entry's failure came first
    if seen == "pass" and spec.expect == "reject" and any(REFUSALS & set(f.verdicts) for f in others):
        return False  # refused, because of another matching entry's refusal
    flag = NEEDS_CPU_FLAG.get(entry.id)
    return WIDER not in entry.reason and (flag is None or flag in cpu_features.x86_flags())


def disagreements(spec: Spec, backend: str, seen: str, version: str | None) -> list[str]:
    """Where the table's predicates and the backend's verdict on `spec` disagree."""
    entries = [e for e in TABLE if backend in e.backends and version_in(version, e.versions)
               and (not e.precisions or "fp32" in e.precisions)]
    applying = [e for e in entries if HAZARDS[e.hazard].applies(spec)]
    found = []
    if seen in EXPLAINABLE and seen not in NOT_RUN and not any(seen in e.verdicts for e in applying):
        found.append(f"narrow: {backend} {seen} on {spec.to_dict()} and no entry's predicate matches it")
    for entry in applying:
        if _too_wide(entry, spec, seen, applying):
            found.append(f"wide: {entry.id} ({entry.hazard}) matches {spec.to_dict()}, {backend} gives {seen}")
    return found


def check(pairs: list[tuple[str, Spec]], isolated: bool) -> list[str]:
    found = []
    for backend, spec, seen, version in observe(pairs, isolated):
        found += disagreements(spec, backend, seen, version)
    return found


# ----- configs around each minimal case ------------------------------------------------------------
def _with_expect(spec: Spec) -> Spec:
    return spec.replace(expect="accept" if spec.is_valid else "reject")


def _axis_changes(spec: Spec) -> list[dict]:
    """Each per-axis attribute one step up and down, on each axis."""
    changes = []
    for axis in range(spec.rank):
        for delta in (-1, 1):
            def step(values, floor=1, axis=axis, delta=delta):
                stepped = list(values)
                stepped[axis] = max(floor, stepped[axis] + delta)
                return tuple(stepped)
            changes += [
                {"input_shape": (*spec.input_shape[:2], *step(spec.in_spatial))},
                {"kernel_shape": step(spec.kernel_shape)},
                {"strides": step(spec.strides)},
                {"dilations": step(spec.dilations)},
                {"output_padding": step(spec.output_padding, 0)},
            ]
            if spec.output_shape is not None:
                changes.append({"output_shape": step(spec.output_shape)})
            elif spec.auto_pad == "NOTSET":
                changes += [{"pads": step(spec.pads, 0)}, {"pads": (*spec.pads[:spec.rank], *step(spec.pads[spec.rank:], 0))}]
    return changes


def _layer_changes(spec: Spec) -> list[dict]:
    """Channels, groups, bias, padding mode, output_shape and dtype, one at a time."""
    per_group_in, per_group_out = spec.in_channels // spec.group, spec.out_channels // spec.group
    changes = [{"bias": not spec.bias}, {"output_shape": None} if spec.output_shape else {"output_shape": spec.output_spatial}]
    for c, m in ((per_group_in + 1, per_group_out), (per_group_in, per_group_out + 1), (1, 1)):
        for group in {spec.group, 1, 2}:
            changes.append({"input_shape": (spec.batch, c * group, *spec.in_spatial), "out_channels": m * group, "group": group})
    for auto_pad in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        changes.append({"auto_pad": auto_pad, "pads": spec.pads if auto_pad == "NOTSET" else None})
    for dtype in ("float32", "float16", "bfloat16"):
        changes.append({"dtype": dtype, "opset": max(spec.opset, BFLOAT16_MIN_OPSET) if dtype == "bfloat16" else spec.opset})
    return changes


def neighbours(spec: Spec) -> list[Spec]:
    """`spec` and the configs one attribute away from it, each marked valid or invalid.

    Like the fuzz strategies, no zero-size output: the spec text neither allows nor forbids it.
    """
    found = {spec.id: _with_expect(spec)}
    for change in _axis_changes(spec) + _layer_changes(spec):
        try:
            candidate = _with_expect(spec.replace(**change))
        except (SpecError, ValueError):
            continue
        if 0 not in candidate.output_spatial:
            found.setdefault(candidate.id, candidate)
    return list(found.values())


def _entry_configs(backends: tuple[str, ...]) -> list[tuple[str, Spec]]:
    """(backend, config) for the neighbours of every entry's minimal cases, on that entry's backends."""
    pairs: dict[tuple[str, str], Spec] = {}
    for entry in TABLE:
        for backend in (b for b in entry.backends if b in backends):
            for case in minimal_cases(entry):
                for spec in neighbours(case):
                    pairs.setdefault((backend, spec.id), spec)
    return [(backend, spec) for (backend, _), spec in pairs.items()]


def _usable(backends: tuple[str, ...]) -> tuple[str, ...]:
    usable = tuple(b for b in backends if _available(b))
    if not usable:
        pytest.skip(f"none of {', '.join(backends)} is available here")
    return usable


@pytest.mark.slow
def test_predicates_agree_with_the_fast_backends_next_to_every_minimal_case():
    found = check(_entry_configs(_usable(FAST)), isolated=False)
    assert not found, "\n".join(found)


@pytest.mark.slow
def test_predicates_agree_with_the_slow_backends_next_to_every_minimal_case():
    found = check(_entry_configs(_usable(SLOW)), isolated=True)
    assert not found, "\n".join(found)


# ----- configs the fuzz strategies draw ------------------------------------------------------------
def _drawn(examples: int) -> list[Spec]:
    """The first `examples` configs the fuzz strategy draws with a fixed seed (float32, float16:
    bfloat16 paths depend on the CPU's kernels, see NEEDS_CPU_FLAG), each once: Hypothesis draws
    some configs twice (53 distinct in the first 60), and a second run of one tells nothing new."""
    drawn: list[Spec] = []

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(specs(("float32", "float16")))
    def collect(spec):
        drawn.append(spec)

    collect()
    return list({spec.id: spec for spec in drawn}.values())


@pytest.mark.slow
def test_predicates_agree_with_the_fast_backends_on_drawn_configs():
    backends = _usable(FAST)
    found = check([(backend, spec) for spec in _drawn(60) for backend in backends], isolated=False)
    assert not found, "\n".join(found)


@pytest.mark.slow
def test_predicates_agree_with_the_slow_backends_on_drawn_configs():
    backends = _usable(SLOW)
    found = check([(backend, spec) for spec in _drawn(60) for backend in backends], isolated=True)
    assert not found, "\n".join(found)


# ----- the case that showed the class: BigVGAN's anti-aliasing filters -----------------------------
#: BigVGAN's UpSample1d: F.conv_transpose1d(x, filter.expand(C, -1, -1), stride=2, groups=C), no bias
BIGVGAN_UPSAMPLE = Spec((1, 16, 58), 16, (12,), strides=2, group=16, bias=False)


def test_lint_and_the_layer_check_agree_on_a_depthwise_upsampler_without_bias():
    """`export` runs each layer through the engine, `lint` reports the table's hazards: on the same
    layer they must agree, with and without the bias that onnx.reference gets wrong."""
    executor = Executor(known=TABLE)
    for spec, verdict in ((BIGVGAN_UPSAMPLE, "pass"), (BIGVGAN_UPSAMPLE.replace(bias=True), "drift")):
        assert executor.run(spec, "onnx-reference").verdict == verdict
        rules = {f.rule for f in findings_for(spec, ["onnx-reference"], TABLE) if f.kind == "hazard"}
        assert ("onnx-reference-grouped" in rules) == (verdict != "pass"), (spec.label, rules)
