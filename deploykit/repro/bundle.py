"""`deploykit repro`: one stored result -> a folder a runtime's maintainers can run in ten seconds.

The folder holds the model, its inputs, the float64 answer and its rounding-error bound as .npy
files, a `repro.py` that needs only NumPy and the runtime (each backend writes its own `run()`
with the runtime's public API: `Backend.repro_recipe`), and an `ISSUE.md` to paste upstream.
`repro.py` exits 1 while the runtime still disagrees with the ONNX spec text and 0 once it is
fixed, so it can go into the runtime's own regression tests.

A bundle judges values with the criterion its run used (stored with the run): the rounding-error
bound of the backend's accumulation model, or the user's --atol/--rtol, written into `repro.py`.
Where it cannot (this deploykit declares another accumulation model than the run recorded), it is
refused: a script that says "fixed" beside an ISSUE.md that reports a bug is a false report.
Where the folder goes, and why nothing in it is ever overwritten, is `deploykit.repro.folder`.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit import backends as registry
from deploykit.backends.base import BuildConfig, ReproRecipe
from deploykit.errors import UsageError
from deploykit.execution import resources
from deploykit.onnxio.write import build_case
from deploykit.op.bound import Accumulation, describe, error_bound
from deploykit.op.judging import Tolerance
from deploykit.op.reference import ExactAnswer
from deploykit.op.spec import ConvTransposeSpec
from deploykit.repro.criterion import BOUND, Criterion
from deploykit.repro.folder import IDENTITY, Target, check_target, write_bundle_folder
from deploykit.repro.templates import issue_body, script_text
from deploykit.results.dbcheck import stored_spec
from deploykit.results.result import Result
from deploykit.results.store import Run, Store

#: verdicts a script can show (a timeout would only hang; a skip is no discrepancy)
REPRODUCIBLE = ("drift", "shape-mismatch", "rejected", "accepted-invalid", "nonfinite", "crash")


@dataclass
class Bundle:
    folder: Path
    files: list[str]
    result: Result
    recipe: ReproRecipe
    criterion: Criterion = BOUND


def _matches(result: Result, config: str) -> bool:
    return config in (result.config_id, result.label) or (len(config) >= 6 and result.config_id.startswith(config))


def find_result(db: Path, config: str, backend: str, run_id: int | None = None) -> tuple[Run, Result]:
    """The one result of `backend` on `config` (an id, an id prefix of 6+ characters or a label)."""
    if not db.is_file():
        raise UsageError(f"--db {db} {'is a directory' if db.is_dir() else 'does not exist'}; give a results database")
    store = Store(db, create=False)
    try:
        run = store.run(run_id) if run_id is not None else store.latest_run()
        if run is None:
            raise UsageError(f"{db} has no run {run_id}" if run_id is not None else f"{db} holds no run")
        found = [r for r in store.results(run.run_id) if r.backend == backend and _matches(r, config)]
    finally:
        store.close()
    if not found:
        raise UsageError(f"run {run.run_id} in {db} has no result of {backend} on config {config!r}")
    # A run with several --precisions holds one result per precision; only fp32 has a script.
    found = [r for r in found if r.precision == "fp32"] or found
    if len({(r.config_id, r.expect, r.precision) for r in found}) > 1:
        ids = ", ".join(sorted({r.config_id for r in found}))
        raise UsageError(f"config {config!r} names several results of {backend} ({ids}); give a config id")
    return run, found[0]


def _recipe(result: Result) -> ReproRecipe:
    if result.verdict not in REPRODUCIBLE:
        raise UsageError(f"{result.backend} on {result.label} is `{result.verdict}`: nothing to reproduce"
                         f" (repro writes {', '.join(REPRODUCIBLE)} results)")
    if result.precision != "fp32":
        raise UsageError(f"repro writes scripts for fp32 builds; this result was built at {result.precision}")
    recipe = registry.get(result.backend).repro_recipe(stored_spec(result), result.backend_version)
    if recipe is None:
        raise UsageError(f"{result.backend} has no standalone runtime to write a script for")
    return recipe


def _save(folder: Path, name: str, array: np.ndarray) -> str:
    """.npy that NumPy alone reads: bfloat16 (not a NumPy type) is saved as float32, exactly."""
    if array.dtype.name == "bfloat16":
        array = array.astype(np.float32)
    np.save(folder / f"{name}.npy", array)
    return f"{name}.npy"


def run_criterion(run: Run, result: Result, models: tuple[Accumulation, ...]) -> Criterion:
    """The criterion the run judged `result` with; refused where the bundle could not judge the same way."""
    stored = run.parameters.get("tolerance")
    if stored is not None:
        return Criterion(_stored_tolerance(run, stored))
    declared = describe(models)
    if result.accumulation and result.accumulation != declared:
        raise UsageError(f"run {run.run_id} judged {result.backend} on {result.label} with the summation model"
                         f" '{result.accumulation}', this deploykit declares '{declared}': a bound.npy from it would judge"
                         " differently; write the repro with the deploykit version that ran it")
    return Criterion(None, declared)


def _stored_tolerance(run: Run, stored) -> Tolerance:
    """The run's --atol/--rtol as stored; anything else is no criterion a script can use."""
    try:
        atol, rtol = float(stored["atol"]), float(stored["rtol"])
    except (TypeError, KeyError, ValueError):
        atol = rtol = float("nan")
    if not (np.isfinite(atol) and np.isfinite(rtol) and atol >= 0 and rtol >= 0):
        raise UsageError(f"run {run.run_id} stores a tolerance repro cannot use ({stored!r}); the bundle could not judge as the run did")
    return Tolerance(atol, rtol)


def write_bundle(db: Path, config: str, backend: str, folder: Path, run_id: int | None = None,
                 max_memory: int | None = None) -> Bundle:
    """Write the folder for one stored result; everything is checked before the first file, and the
    files are written beside the target and moved into place (deploykit.repro.folder).

    The config's memory is checked against `max_memory` (default: resources.default_budget()) as
    `conformance run` checks it: the float64 reference and bound a bundle holds cost what a run's do."""
    run, result = find_result(db, config, backend, run_id)
    recipe = _recipe(result)
    spec = stored_spec(result)
    resources.check_budget([spec], max_memory or resources.default_budget())
    models = registry.get(backend).accumulation(spec.dtype, BuildConfig())
    criterion = run_criterion(run, result, models)
    identity = {name: getattr(result, name) for name in IDENTITY}
    target = check_target(folder, identity, result.label)
    case = build_case(spec)
    script = script_text(spec, result, recipe, case.output_names, criterion)
    issue = issue_text(spec, result, recipe, run, criterion)
    details = {"verdict": result.verdict, "run_id": run.run_id, "criterion": criterion.as_dict()}
    files = install(target, identity, result.label, details, lambda staging: fill(staging, case, models, criterion, script, issue))
    return Bundle(folder, files, result, recipe, criterion)


def fill(staging: Path, case, models: tuple[Accumulation, ...], criterion: Criterion, script: str, issue: str) -> list[str]:
    """A bundle's files, written into the staging folder: the same for a stored result and a known
    divergence (deploykit.repro.divergence), only the script and issue text differ."""
    files = ["model.onnx", *_write_arrays(staging, case.spec, case, models, criterion)]
    (staging / "model.onnx").write_bytes(case.model_bytes)
    (staging / "repro.py").write_text(script)
    (staging / "ISSUE.md").write_text(issue)
    return [*files, "repro.py", "ISSUE.md"]


def install(target: Target, identity: dict[str, str], label: str, details: dict, writer: Callable[[Path], list[str]]) -> list[str]:
    """Write the folder (deploykit.repro.folder: staged, then moved into place); a failed write is one line."""
    try:
        return write_bundle_folder(target, identity, label, details, writer)
    except OSError as error:
        raise UsageError(f"-o {target.given}: cannot write ({error.strerror}); what was there is unchanged") from None


def _write_arrays(folder: Path, spec: ConvTransposeSpec, case, models: tuple[Accumulation, ...], criterion: Criterion) -> list[str]:
    """The inputs, and for a valid config the float64 answer and, where the run judged with it, the bound."""
    files = [_save(folder, "X", case.x), _save(folder, "W", case.w)]
    if case.b is not None:
        files.append(_save(folder, "B", case.b))
    if spec.is_valid:
        exact = ExactAnswer(spec, case.x, case.w, case.b)
        files.append(_save(folder, "expected", exact.output))
        if criterion.tolerance is None:
            files.append(_save(folder, "bound", error_bound(spec, exact, models)))
    return files


def issue_text(spec: ConvTransposeSpec, result: Result, recipe: ReproRecipe, run: Run, criterion: Criterion = BOUND) -> str:
    return issue_body(spec, result, recipe, run, _environment(run), criterion)


def _environment(run: Run) -> dict:
    """Where the result was found (the run's record), not where the folder is written."""
    env = dict(run.environment or {})
    env.setdefault("os", platform.platform())
    return env
