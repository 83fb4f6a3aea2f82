"""`deploykit repro --divergence ID`: the repro folder of a known divergence, written from its table entry.

conformance/repros/<id>/ has one source, the entry's `repro:` block in conformance/known_divergences.yaml
(its minimal config, backend, verdict and the backend version it was measured with): this module
writes the folder through the same code as a bundle from a results database (deploykit.repro.bundle
for the files, deploykit.repro.folder for where they go), and tests/repro/test_repro_folders.py checks that
every committed folder is what it writes, byte for byte.  So the bytes are the same on every machine:
the inputs are drawn from a generator seeded by the config id, ISSUE.md names the versions the entry
names and nothing of the machine that writes it, and model.onnx carries no onnx version.

A few repros are API traps a generated folder cannot show (a Python API that converts a bfloat16
array wrongly, a provider that has no float64 kernel): their scripts are kept as written in
deploykit/repro/scripts/<id>.py and copied into the folder by the same command.  A script whose
name is no table entry is a trap deploykit works around, so no run ever meets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deploykit import backends as registry
from deploykit.backends.base import BuildConfig, ReproRecipe
from deploykit.errors import UsageError
from deploykit.onnxio.write import build_case
from deploykit.op.bound import describe
from deploykit.op.spec import ConvTransposeSpec
from deploykit.repro.bundle import fill, install
from deploykit.repro.criterion import Criterion
from deploykit.repro.folder import IDENTITY, check_target
from deploykit.repro.templates import issue_body, script_text
from deploykit.results.divergences import Divergence, load
from deploykit.results.result import Result

#: the scripts kept as written, one per divergence id
SCRIPTS = Path(__file__).resolve().with_name("scripts")
#: `--divergence all`: every folder, each in -o/<id>
ALL = "all"


@dataclass(frozen=True)
class Written:
    """One folder written: which divergence, where, and the files in it (the marker left out)."""

    id: str
    folder: Path
    files: list[str]


def script_ids() -> list[str]:
    """The ids that have a script kept as written."""
    return sorted(path.stem for path in SCRIPTS.glob("*.py"))


def repro_ids(table: list[Divergence]) -> list[str]:
    """Every id `--divergence` writes: the entries with a `repro:` block, and the API-trap scripts."""
    return sorted({entry.id for entry in table if entry.repro} | set(script_ids()))


def divergence_command(divergence: str, output: Path, given: list[str]) -> list[Written]:
    """`deploykit repro --divergence ID -o DIR`; `given` are the options of a result in a database
    that were given too (--db, --config, ...): one route or the other, never a mix."""
    from deploykit.outputs import check_paths
    from deploykit.paths import KNOWN_DIVERGENCES

    if given:
        raise UsageError(f"--divergence writes from the known-divergence table; {given[0]} is for a result in --db: give one or the other")
    check_paths(inputs={"the known-divergence table": KNOWN_DIVERGENCES}, output_folders={"-o": output})
    return write_divergences(divergence, output)


def write_divergences(ident: str, output: Path, table: list[Divergence] | None = None) -> list[Written]:
    """Write the folder of `ident` into `output`, or for `all` every folder into `output`/<id>."""
    table = load() if table is None else table
    known = repro_ids(table)
    if ident == ALL:
        return [write_divergence(one, output / one, table) for one in known]
    if ident not in known:
        close = [one for one in known if ident in one or one in ident][:3]
        hint = f" (did you mean {', '.join(close)}?)" if close else f"; `deploykit repro --divergence all` writes all {len(known)}"
        raise UsageError(f"--divergence {ident!r} names no known divergence with a repro{hint}")
    return [write_divergence(ident, output, table)]


def write_divergence(ident: str, folder: Path, table: list[Divergence]) -> Written:
    """Write one folder: the generated bundle, or the script kept as written."""
    entry = next((e for e in table if e.id == ident), None)
    if entry is None or (entry.repro is not None and entry.repro.script):
        return _write_script(ident, folder, entry)
    return _write_generated(entry, folder)


def _identity(config_id: str, expect: str, backend: str, precision: str) -> dict[str, str]:
    return dict(zip(IDENTITY, (config_id, expect, backend, precision)))


def _write_script(ident: str, folder: Path, entry: Divergence | None) -> Written:
    script = SCRIPTS / f"{ident}.py"
    if not script.is_file():
        raise UsageError(f"known divergence {ident} says `script: true` but deploykit has no {script.name}; is the install damaged?")
    repro = entry.repro if entry is not None else None
    config_id, expect = (repro.config.id, repro.config.expect) if repro is not None else (ident, "accept")
    identity = _identity(config_id, expect, repro.backend if repro else "", repro.precision if repro else "fp32")
    target = check_target(folder, identity, ident)

    def copy(staging: Path) -> list[str]:
        (staging / "repro.py").write_bytes(script.read_bytes())
        return ["repro.py"]

    return Written(ident, folder, install(target, identity, ident, {"divergence": ident, "script": True}, copy))


def _write_generated(entry: Divergence, folder: Path) -> Written:
    assert entry.repro is not None
    repro, spec = entry.repro, entry.repro.config
    recipe = _recipe(entry, spec)
    models = registry.get(repro.backend).accumulation(spec.dtype, BuildConfig(precision=repro.precision))
    criterion = Criterion(None, describe(models))
    result = Result(config_id=spec.id, label=spec.label, backend=repro.backend, dtype=spec.dtype, verdict=entry.repro_verdict,
                    precision=repro.precision, expect=spec.expect, backend_version=repro.version, spec=spec.to_dict())
    identity = {name: getattr(result, name) for name in IDENTITY}
    target = check_target(folder, identity, spec.label)
    case = build_case(spec)
    script = script_text(spec, result, recipe, case.output_names, criterion)
    issue = _issue(entry, spec, result, recipe, criterion)
    details = {"divergence": entry.id, "verdict": result.verdict, "criterion": criterion.as_dict()}
    files = install(target, identity, spec.label, details, lambda staging: fill(staging, case, models, criterion, script, issue))
    return Written(entry.id, folder, files)


def _recipe(entry: Divergence, spec: ConvTransposeSpec) -> ReproRecipe:
    assert entry.repro is not None
    if entry.repro.precision != "fp32":
        raise UsageError(f"known divergence {entry.id}: repro writes scripts for fp32 builds, its repro names {entry.repro.precision}")
    recipe = registry.get(entry.repro.backend).repro_recipe(spec, entry.repro.version)
    if recipe is None:
        raise UsageError(f"known divergence {entry.id}: {entry.repro.backend} has no standalone runtime to write a script for")
    return recipe


def _issue(entry: Divergence, spec: ConvTransposeSpec, result: Result, recipe: ReproRecipe, criterion: Criterion) -> str:
    """ISSUE.md with the entry's words for what happens and its versions, nothing of this machine."""
    from deploykit.report.escape import md

    happens = md(entry.reason) + (f"\n\nUpstream: {md(entry.upstream)}." if entry.upstream else "")
    environment = [
        f"- {recipe.runtime}: {md(entry.repro.version if entry.repro and entry.repro.version else 'unknown')}",
        f"- found by deploykit (verdict `{result.verdict}`, config `{result.config_id}`); known divergence `{entry.id}`"
        " in conformance/known_divergences.yaml",
    ]
    return issue_body(spec, result, recipe, None, {}, criterion, happens=happens, environment=environment)
