"""Known divergences: runtime behaviour that differs from the ONNX text and is already reported
upstream.  A result that matches one is still shown, marked `known`, and does not fail a run.

An entry may be limited to build precisions (`precisions: [fp16]`) and to a range of the
backend's versions (`versions: ">=2024.0,<2026.1"`, a PEP 440 specifier): a divergence fixed in a
release must become a finding again where it comes back.

An entry with a `repro:` block names its minimal case (a config in the spec notation of the results
database, the backend, the verdict and the backend version it was measured with): `deploykit repro
--divergence ID` writes conformance/repros/<id>/ from it, so the folder has one source.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated, Any, cast

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import AfterValidator, ConfigDict, Field, Strict, StringConstraints, model_validator
from pydantic.dataclasses import dataclass

from deploykit.errors import UsageError
from deploykit.op.hazards import HAZARDS
from deploykit.op.spec import ConvTransposeSpec, SpecError
from deploykit.paths import KNOWN_DIVERGENCES
from deploykit.schema import known_name, validated
from deploykit.vocabulary import PRECISIONS, VERDICTS, Verdict
from deploykit.yamlfile import read_yaml

#: A string with more than blanks, kept as written: YAML's `true` or `5` is no name.
Text = Annotated[str, Strict(), StringConstraints(pattern=r"\S")]
#: Verdicts a divergence may explain: every verdict but `pass`, which needs no explaining.
EXPLAINABLE = tuple(v for v in VERDICTS if v != "pass")
_LEADING_VERSION = re.compile(r"\d+(\.\d+)*")


def _specifier(text: str) -> str:
    try:
        SpecifierSet(text)
    except InvalidSpecifier:
        raise ValueError(f"{text!r} is not a version range such as '>=1.20,<1.32'") from None
    return text


def version_in(version: str | None, versions: str) -> bool:
    """Whether a backend's version string (e.g. `2.13.0+cpu`, `2.11 (CUDA 13, H100)`) is in range.

    An empty range matches every version; an unknown or unparsable version matches none of a
    non-empty range, so a limited divergence never hides a finding it was not written for.
    """
    if not versions:
        return True
    found = _LEADING_VERSION.match(version or "")
    try:
        return found is not None and Version(found.group()) in SpecifierSet(versions)
    except InvalidVersion:
        return False


def _config(data: dict[str, Any]) -> dict[str, Any]:
    """A config as the results database writes one (ONNX attribute names, defaults left out)."""
    try:
        ConvTransposeSpec.from_dict(data)
    except (SpecError, TypeError) as error:
        raise ValueError(f"not a config: {error}") from None
    return data


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Repro:
    """The minimal case `deploykit repro --divergence ID` writes into conformance/repros/<id>/."""

    #: which of the entry's backends the folder runs
    backend: Text
    #: the config, e.g. {input_shape: [1, 1, 2], out_channels: 1, kernel_shape: [1], strides: [2]}
    spec: Annotated[dict[str, Any], AfterValidator(_config)]
    #: which of the entry's verdicts it shows; may be left out when the entry lists one
    verdict: Annotated[Text, known_name("verdict", EXPLAINABLE)] | None = None
    #: the backend version it was measured with (ISSUE.md's title and the script's pip pin)
    version: Text | None = None
    #: the build precision it was measured at
    precision: Annotated[Text, known_name("precision", PRECISIONS)] = "fp32"
    #: a script kept as written (deploykit/repro/scripts/<id>.py) where a generated bundle cannot show it
    script: Annotated[bool, Strict()] = False

    @property
    def config(self) -> ConvTransposeSpec:
        """The config, marked spec-invalid where it breaks a rule (the runtime should refuse it)."""
        spec = ConvTransposeSpec.from_dict(self.spec)
        return spec if "expect" in self.spec else spec.replace(expect="accept" if spec.is_valid else "reject")


# Strictness is per field (Text): a strict dataclass would take only instances, not the YAML mapping.
@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Divergence:
    """One table entry; the schema the table is checked against when it loads."""

    id: Text
    backends: Annotated[tuple[Text, ...], Field(min_length=1)]
    hazard: Annotated[Text, known_name("hazard", HAZARDS)]
    verdicts: Annotated[tuple[Annotated[Text, known_name("verdict", EXPLAINABLE)], ...], Field(min_length=1)]
    reason: Text
    #: the upstream report (a URL), or "not yet reported" with a `repro`
    upstream: Text = ""
    #: the minimal case its repro folder (conformance/repros/<id>/) is written from
    repro: Repro | None = None
    #: build precisions it is seen at; empty: every precision
    precisions: tuple[Annotated[Text, known_name("precision", PRECISIONS)], ...] = ()
    #: the backend versions it is seen in, as a PEP 440 specifier; empty: every version
    versions: Annotated[str, Strict(), AfterValidator(_specifier)] = ""

    @model_validator(mode="after")
    def _repro_is_of_this_entry(self) -> "Divergence":
        """The repro's backend and verdict are the entry's own: a folder must show what the entry says."""
        repro = self.repro
        if repro is None:
            return self
        if repro.backend not in self.backends:
            raise ValueError(f"repro.backend: {repro.backend!r} is none of the entry's backends ({', '.join(self.backends)})")
        if repro.verdict is None and len(self.verdicts) > 1:
            raise ValueError(f"repro.verdict: is required where the entry lists several verdicts ({', '.join(self.verdicts)})")
        if repro.verdict is not None and repro.verdict not in self.verdicts:
            raise ValueError(f"repro.verdict: {repro.verdict!r} is none of the entry's verdicts ({', '.join(self.verdicts)})")
        if repro.version is not None and not version_in(repro.version, self.versions):
            raise ValueError(f"repro.version: {repro.version!r} is outside the entry's versions ({self.versions})")
        return self

    @property
    def repro_verdict(self) -> Verdict:
        """The verdict its repro folder shows (a verdict name: the schema checked it against EXPLAINABLE)."""
        return cast(Verdict, (self.repro and self.repro.verdict) or self.verdicts[0])

    def matches(self, spec: ConvTransposeSpec, backend: str, verdict: str, precision: str = "fp32",
                version: str | None = None) -> bool:
        return (
            backend in self.backends
            and verdict in self.verdicts
            and (not self.precisions or precision in self.precisions)
            and version_in(version, self.versions)
            and HAZARDS[self.hazard].applies(spec)
        )


def load(path: Path | str = KNOWN_DIVERGENCES) -> list[Divergence]:
    """The table, validated; a missing or broken table is an error, never an empty list.

    An empty list would turn every known divergence into a "new finding" and fail the run for the
    wrong reason.  An explicit `[]` is a table without entries.
    """
    what = f"known-divergence table {path}"
    entries = read_yaml(Path(path), "known-divergence table")
    if entries is None:
        raise UsageError(f"{what} is empty; write [] for a table without entries")
    if not isinstance(entries, list):
        raise UsageError(f"{what} must be a list of entries, got {type(entries).__name__}")
    table: list[Divergence] = []
    for index, entry in enumerate(entries):
        where = f"{what}, entry {index}"
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            where += f" ({entry['id']})"
        divergence = validated(Divergence, entry, where)
        earlier = next((i for i, d in enumerate(table) if d.id == divergence.id), None)
        if earlier is not None:
            raise UsageError(f"{where}: id {divergence.id!r} is already used by entry {earlier}")
        table.append(divergence)
    return table


def snapshot(table: list[Divergence]) -> list[dict]:
    """The table as stored with a run, as it would be written (empty optional fields left out)."""
    return [{k: v for k, v in dataclasses.asdict(entry).items() if v not in ("", (), [], None)} for entry in table]


def for_run(stored: list[dict] | None) -> list[Divergence]:
    """The table a run was judged with; the current one for a run from before it was stored (or
    whose entries no longer validate: a hazard since renamed)."""
    if stored is not None:
        try:
            return [Divergence(**_current(entry)) for entry in stored]
        except (TypeError, ValueError):
            pass
    return load()


def _current(entry: dict) -> dict:
    """A stored entry in today's schema: tables before the `repro:` block named a script path there."""
    return {k: v for k, v in entry.items() if not (k == "repro" and isinstance(v, str))}


def match(table: list[Divergence], spec: ConvTransposeSpec, backend: str, verdict: str, precision: str = "fp32",
          version: str | None = None) -> Divergence | None:
    for divergence in table:
        if divergence.matches(spec, backend, verdict, precision, version):
            return divergence
    return None
