"""Known divergences: runtime behaviour that differs from the ONNX text and is already reported
upstream.  A result that matches one is still shown, marked `known`, and does not fail a run.

An entry may be limited to build precisions (`precisions: [fp16]`) and to a range of the
backend's versions (`versions: ">=2024.0,<2026.1"`, a PEP 440 specifier): a divergence fixed in a
release must become a finding again where it comes back.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import AfterValidator, ConfigDict, Field, Strict, StringConstraints
from pydantic.dataclasses import dataclass

from deploykit.errors import UsageError
from deploykit.op.hazards import HAZARDS
from deploykit.op.spec import ConvTransposeSpec
from deploykit.paths import KNOWN_DIVERGENCES
from deploykit.schema import known_name, validated
from deploykit.vocabulary import PRECISIONS, VERDICTS
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
    #: a standalone script (numpy, onnx and the runtime only) that shows it in seconds
    repro: Text = ""
    #: build precisions it is seen at; empty: every precision
    precisions: tuple[Annotated[Text, known_name("precision", PRECISIONS)], ...] = ()
    #: the backend versions it is seen in, as a PEP 440 specifier; empty: every version
    versions: Annotated[str, Strict(), AfterValidator(_specifier)] = ""

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
    return [{k: v for k, v in dataclasses.asdict(entry).items() if v not in ("", (), [])} for entry in table]


def for_run(stored: list[dict] | None) -> list[Divergence]:
    """The table a run was judged with; the current one for a run from before it was stored (or
    whose entries no longer validate: a hazard since renamed)."""
    if stored is not None:
        try:
            return [Divergence(**entry) for entry in stored]
        except (TypeError, ValueError):
            pass
    return load()


def match(table: list[Divergence], spec: ConvTransposeSpec, backend: str, verdict: str, precision: str = "fp32",
          version: str | None = None) -> Divergence | None:
    for divergence in table:
        if divergence.matches(spec, backend, verdict, precision, version):
            return divergence
    return None
