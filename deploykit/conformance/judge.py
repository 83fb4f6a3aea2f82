"""`deploykit conformance judge DIR --as BACKEND`: verdicts on outputs a runtime produced elsewhere.

DIR is a tree `deploykit generate` wrote.  Each case's answer (`deploykit.conformance.answers`: an output
file, or the runtime's refusal) replaces the backend's phase of `conformance run`; everything
else is that command's own path (`Executor.judge_outcome`): the float64 reference, the bound from
the backend's accumulation model at the chosen precision, the known-divergence table (matched on
the backend, the precision and the version the user gives), the store and the summary.  A judged
run is a run: report, compare and merge read it as any other.

What a run decides before running, judging decides from the answer: a refusal of a config the
backend declares it cannot run (a dtype it has no kernel for, a build precision it lacks) is
`unsupported`, as `run` records it; outputs for such a config are judged, being evidence.  Checks
that need the machine (a GPU, an engine profile) do not apply: the outputs were made elsewhere.

A case without an answer is not recorded, and the run stays unfinished (INCOMPLETE in every
report): a verdict was not reached for it, and none is made up.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from deploykit import backends as registry
from deploykit.backends.base import Backend, BuildConfig
from deploykit.conformance.answers import Answer, answer_files, read_answer
from deploykit.conformance.matrix import Matrix
from deploykit.conformance.run import matrix_hash, shard_of
from deploykit.errors import RunAborted, UsageError
from deploykit.execution import liveness, resources
from deploykit.execution.execute import Executor, Outcome, one_line
from deploykit.execution.harness import Task
from deploykit.onnxio.write import Case
from deploykit.op.judging import Tolerance
from deploykit.op.spec import ConvTransposeSpec, SpecError
from deploykit.results import divergences, environment
from deploykit.results.result import Result
from deploykit.results.store import Run, Store

#: what `generate` adds to a spec in deploykit.json (derived, so left out when the spec is read)
_DERIVED_KEYS = ("id", "label", "expected_shape", "onnx_inferred_shape", "violations", "onnx_check")


@dataclass
class JudgeRequest:
    folder: Path
    backend: str
    precision: str = "fp32"
    #: the runtime version that produced the outputs (version-ranged known divergences use it)
    version: str | None = None
    db: Path = Path("deploykit-results.db")
    tolerance: Tolerance | None = None
    shard: tuple[int, int] | None = None
    #: per-config memory budget in bytes (the reference is computed here); None: resources.default_budget()
    max_memory: int | None = None


@dataclass
class TreeCase:
    """One case folder: its spec (from deploykit.json) and its answer file, if any."""

    folder: Path
    spec: ConvTransposeSpec
    answer: Path | None


@dataclass
class JudgeOutcome:
    run: Run
    results: list[Result]
    #: case folders with no answer file (nothing recorded for them)
    unanswered: list[str] = field(default_factory=list)


def read_tree(folder: Path) -> list[TreeCase]:
    """Every case folder of a `generate` tree, with its spec and answer; anything else is one line."""
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; give the tree `deploykit generate --out` wrote")
    folders = sorted(p.parent for p in folder.glob("*/deploykit.json"))
    if not folders:
        raise UsageError(f"{folder} is not a tree written by `deploykit generate`: no case folder holds a deploykit.json")
    return [_tree_case(case) for case in folders]


def _tree_case(folder: Path) -> TreeCase:
    data = folder / "test_data_set_0"
    if not (folder / "model.onnx").is_file() or not data.is_dir():
        raise UsageError(f"{folder} is not a case folder written by `deploykit generate` (no model.onnx or test_data_set_0/)")
    answers = answer_files(data)
    if len(answers) > 1:
        raise UsageError(f"{data} holds {len(answers)} answers ({', '.join(p.name for p in answers)}); keep one")
    return TreeCase(folder, _case_spec(folder / "deploykit.json"), answers[0] if answers else None)


def _case_spec(path: Path) -> ConvTransposeSpec:
    """The config in a case's deploykit.json, checked against the id `generate` wrote with it."""
    try:
        meta = json.loads(path.read_text())
        spec = ConvTransposeSpec.from_dict({k: v for k, v in meta.items() if k not in _DERIVED_KEYS})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, AttributeError, TypeError, SpecError) as error:
        raise UsageError(f"{path}: not a deploykit.json written by `deploykit generate` ({error})") from None
    if spec.id != meta.get("id"):
        raise UsageError(f"{path}: its config has id {spec.id}, not the {meta.get('id')!r} written beside it;"
                         " regenerate the tree")
    problems = spec.violations()
    if bool(problems) != (spec.expect == "reject"):
        # generate writes an invalid config as `expect: reject` only: an edited file would be judged
        # against a reference that does not exist, or a valid config as a negative case
        said = f"invalid ({'; '.join(problems)})" if problems else "valid"
        raise UsageError(f"{path}: its config is {said} but says expect: {spec.expect}; regenerate the tree")
    return spec


def check_inputs(tree_case: TreeCase, case: Case) -> None:
    """The runtime was fed the tree's inputs; the reference is computed from deploykit's own draw
    for the config.  They must be the same tensors (another deploykit version could draw others)."""
    data = tree_case.folder / "test_data_set_0"
    given = {}
    for path in sorted(data.glob("input_*.pb")):
        try:
            tensor = onnx.load_tensor(str(path))
        except Exception as error:  # noqa: BLE001 - protobuf raises many types for a bad file
            raise UsageError(f"{path}: not a TensorProto ({type(error).__name__})") from None
        given[tensor.name] = numpy_helper.to_array(tensor)
    try:
        model = onnx.load(str(tree_case.folder / "model.onnx"))
    except Exception as error:  # noqa: BLE001
        raise UsageError(f"{tree_case.folder / 'model.onnx'}: not an ONNX model ({type(error).__name__})") from None
    given.update({t.name: numpy_helper.to_array(t) for t in model.graph.initializer})
    expected = dict(case.feeds, W=case.require_weights(), **({"B": case.b} if case.b is not None else {}))
    for name, array in expected.items():
        found = given.get(name)
        if found is None or found.shape != array.shape or found.tobytes() != np.ascontiguousarray(array).tobytes():
            raise UsageError(f"{tree_case.folder}: its {name} is not the one deploykit draws for config {case.require_spec().id}"
                             " (written by another deploykit version?); regenerate the tree")


def answer_outcome(answer: Answer, backend: Backend, case: Case, precision: str) -> Outcome:
    """What the runtime did, as `execute.run_backend` would have said it."""
    if answer.refusal is not None:
        message = one_line(RuntimeError(answer.refusal))  # as a refusal in a run is worded
        declared = Backend.unsupported_reason(backend, case, BuildConfig(precision=precision))
        if declared:  # the backend's capabilities, not the machine checks an override may add
            return Outcome("unsupported", f"{declared}; it refused the model: {message}")
        return Outcome("rejected", message)
    assert answer.output is not None, "an answer without a refusal has an output (answers.read_answer)"
    return Outcome("ok", outputs={case.output_names[0]: answer.output}, reading_error=answer.reading_error,
                   reading=answer.reading)


def _chosen(cases: list[TreeCase], request: JudgeRequest) -> list[TreeCase]:
    """The cases of the request's shard: the split `conformance run --shard` makes of the same tasks."""
    if request.shard is None:
        return cases
    by_key = {(c.spec.id, c.spec.expect): c for c in cases}
    tasks = shard_of([Task(c.spec, request.backend, request.precision) for c in cases], *request.shard)
    return [by_key[(t.spec.id, t.spec.expect)] for t in tasks]


def check_request(request: JudgeRequest) -> Backend:
    """The backend and precision exist, whatever this machine has (the outputs were made elsewhere)."""
    backend = registry.get(request.backend)
    if request.precision not in backend.capabilities.precisions:
        raise UsageError(f"--precision {request.precision}: {request.backend} has no such build precision"
                         f" (it offers {', '.join(backend.capabilities.precisions)})")
    return backend


def judge(request: JudgeRequest) -> JudgeOutcome:
    """Read every answer (any malformed file stops here, before the database is touched), then judge
    and store each as a run's result."""
    backend = check_request(request)
    table = divergences.load()
    every = read_tree(request.folder)
    cases = _chosen(every, request)
    resources.check_budget([c.spec for c in cases if c.answer is not None], request.max_memory or resources.default_budget())
    executor = Executor(request.tolerance, known=table)
    answered: list[tuple[TreeCase, Outcome]] = []
    for tree_case in cases:
        if tree_case.answer is None:
            continue
        case = executor.prepare(tree_case.spec).case
        check_inputs(tree_case, case)
        answer = read_answer(tree_case.answer, tree_case.spec.dtype, case.output_names[0])
        answered.append((tree_case, answer_outcome(answer, backend, case, request.precision)))
    if not answered:
        raise UsageError(f"no case in {request.folder} has an answer in test_data_set_0/ (actual_0.pb, actual_0.npy,"
                         " actual.json or error.txt); run the runtime on the tree first")
    unanswered = [c.folder.name for c in cases if c.answer is None]
    parameters = _parameters(request, every, len(cases))
    return _store(request, executor, parameters, answered, unanswered)


def _store(request: JudgeRequest, executor: Executor, parameters: dict, answered: list[tuple[TreeCase, Outcome]],
           unanswered: list[str]) -> JudgeOutcome:
    store = Store(request.db)
    try:
        run_id = store.start_run(f"judged {request.folder.resolve().name}", parameters, _environment(request),
                                 parameters["planned"], liveness.current_owner(), divergences.snapshot(executor.known))
        for tree_case, outcome in answered:
            store.add(run_id, executor.judge_outcome(tree_case.spec, request.backend, outcome, request.precision,
                                                     request.version))
        if not unanswered:
            store.finish_run(run_id)
        return JudgeOutcome(store.started_run(run_id), store.results(run_id), unanswered)
    except sqlite3.Error as error:  # a full disk or a file size limit: SQLite keeps the file intact
        raise RunAborted(f"cannot write results to {request.db}: {error}", resumable=False) from None
    finally:
        store.close()


def _parameters(request: JudgeRequest, every: list[TreeCase], planned: int) -> dict:
    """What the run was asked to do; the keys `conformance merge` compares are those of a run."""
    matrix = Matrix(request.folder.name, request.folder, [c.spec for c in every])
    return {
        "kind": "judge", "folder": str(request.folder.resolve()), "matrix_hash": matrix_hash(matrix),
        "backends": [request.backend], "dtypes": None, "precisions": [request.precision],
        "tolerance": None if request.tolerance is None else vars(request.tolerance), "latency": None,
        "backend_version": request.version, "shard": list(request.shard) if request.shard else None,
        "planned": planned, "planned_total": len(every),
    }


def _environment(request: JudgeRequest) -> dict:
    """The outputs came from elsewhere: what made them is what the user said; this machine only judged."""
    return {
        "outputs_from": {"backend": request.backend, "version": request.version, "folder": str(request.folder.resolve())},
        "judged_on": environment.collect(),
    }
