"""`deploykit repro`: one stored result -> a folder a runtime's maintainers can run in ten seconds.

The folder holds the model, its inputs, the float64 answer and its rounding-error bound as .npy
files, a `repro.py` that needs only NumPy and the runtime (each backend writes its own `run()`
with the runtime's public API: `Backend.repro_recipe`), and an `ISSUE.md` to paste upstream.
`repro.py` exits 1 while the runtime still disagrees with the ONNX spec text and 0 once it is
fixed, so it can go into the runtime's own regression tests.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit import backends as registry
from deploykit.backends.base import BuildConfig, ReproRecipe
from deploykit.bound import error_bound
from deploykit.errors import UsageError
from deploykit.onnxgen import build_case
from deploykit.reference import ExactAnswer
from deploykit.result import Result
from deploykit.spec import ConvTransposeSpec
from deploykit.store import Run, Store

#: verdicts a script can show (a timeout would only hang; a skip is no discrepancy)
REPRODUCIBLE = ("drift", "shape-mismatch", "rejected", "accepted-invalid", "nonfinite", "crash")
#: files only some bundles have: an earlier bundle's copy in the same folder would belong to another config
OPTIONAL_FILES = ("B.npy", "expected.npy", "bound.npy")


@dataclass
class Bundle:
    folder: Path
    files: list[str]
    result: Result
    recipe: ReproRecipe


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
    recipe = registry.get(result.backend).repro_recipe(ConvTransposeSpec.from_dict(result.spec), result.backend_version)
    if recipe is None:
        raise UsageError(f"{result.backend} has no standalone runtime to write a script for")
    return recipe


def _save(folder: Path, name: str, array: np.ndarray) -> str:
    """.npy that NumPy alone reads: bfloat16 (not a NumPy type) is saved as float32, exactly."""
    if array.dtype.name == "bfloat16":
        array = array.astype(np.float32)
    np.save(folder / f"{name}.npy", array)
    return f"{name}.npy"


def write_bundle(db: Path, config: str, backend: str, folder: Path, run_id: int | None = None) -> Bundle:
    """Write the folder for one stored result; everything is checked before the first file."""
    run, result = find_result(db, config, backend, run_id)
    recipe = _recipe(result)
    spec = ConvTransposeSpec.from_dict(result.spec)
    case = build_case(spec)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files = _write_arrays(folder, spec, case, result.backend)
        (folder / "model.onnx").write_bytes(case.model_bytes)
        (folder / "repro.py").write_text(script_text(spec, result, recipe, case.output_names))
        (folder / "ISSUE.md").write_text(issue_text(spec, result, recipe, run))
        for stale in sorted(set(OPTIONAL_FILES) - set(files)):  # left by an earlier bundle in the folder
            (folder / stale).unlink(missing_ok=True)
    except OSError as error:
        raise UsageError(f"-o {folder}: cannot write ({error.strerror})") from None
    return Bundle(folder, ["model.onnx", *files, "repro.py", "ISSUE.md"], result, recipe)


def _write_arrays(folder: Path, spec: ConvTransposeSpec, case, backend: str) -> list[str]:
    files = [_save(folder, "X", case.x), _save(folder, "W", case.w)]
    if case.b is not None:
        files.append(_save(folder, "B", case.b))
    if spec.is_valid:
        exact = ExactAnswer(spec, case.x, case.w, case.b)
        bound = error_bound(spec, exact, registry.get(backend).accumulation(spec.dtype, BuildConfig()))
        files += [_save(folder, "expected", exact.output), _save(folder, "bound", bound)]
    return files


def script_text(spec: ConvTransposeSpec, result: Result, recipe: ReproRecipe, outputs: list[str]) -> str:
    from deploykit.repro_templates import SCRIPT

    feeds = [] if recipe.reads_files else (["X", "W"] + (["B"] if spec.bias else []) if spec.weights_as_inputs else ["X"])
    return SCRIPT.format(
        title=issue_title(spec, result, recipe), pip=install_line(spec, recipe), verdict=result.verdict,
        imports=recipe.imports, runtime=recipe.runtime, version=recipe.version, dtype=spec.dtype, feeds=feeds,
        invalid=not spec.is_valid, violations="; ".join(spec.violations()), run=recipe.run.rstrip(),
    )


def install_line(spec: ConvTransposeSpec, recipe: ReproRecipe) -> str:
    """What `pip install` needs: NumPy, the runtime, and ml_dtypes for bfloat16 (NumPy has none)."""
    return f"numpy {recipe.pip}" + (" ml_dtypes" if spec.dtype == "bfloat16" else "")


def issue_title(spec: ConvTransposeSpec, result: Result, recipe: ReproRecipe) -> str:
    what = {
        "drift": "computes wrong values", "nonfinite": "returns NaN/Inf", "shape-mismatch": "returns the wrong output shape",
        "rejected": "refuses a valid model", "accepted-invalid": "runs a model the ONNX spec rules out",
        "crash": "aborts the process",
    }[result.verdict]
    runtime = f"{recipe.runtime} {result.backend_version}" if result.backend_version else recipe.runtime
    return f"{runtime}: ConvTranspose {what} ({attribute_summary(spec)})"


def attribute_summary(spec: ConvTransposeSpec) -> str:
    """The config in ONNX's own words, defaults left out: what a maintainer reads in a title."""
    defaults = ConvTransposeSpec(input_shape=spec.input_shape, out_channels=spec.out_channels, kernel_shape=spec.kernel_shape)
    parts = [f"{spec.rank}-D X{list(spec.input_shape)}", f"kernel_shape={list(spec.kernel_shape)}"]
    for name in ("strides", "pads", "output_padding", "dilations", "group", "auto_pad", "output_shape"):
        value = getattr(spec, name)
        if value != getattr(defaults, name):
            parts.append(f"{name}={list(value) if isinstance(value, tuple) else value}")
    if spec.dtype != "float32":
        parts.append(spec.dtype)
    return ", ".join(parts)


def issue_text(spec: ConvTransposeSpec, result: Result, recipe: ReproRecipe, run: Run) -> str:
    from deploykit.repro_templates import issue_body

    return issue_body(spec, result, recipe, run, _environment(run))


def _environment(run: Run) -> dict:
    """Where the result was found (the run's record), not where the folder is written."""
    env = dict(run.environment or {})
    env.setdefault("os", platform.platform())
    return env
