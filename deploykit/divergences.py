"""Known divergences: runtime behaviour that differs from the ONNX text and is already reported
upstream.  A result that matches one is still shown, marked `known`, and does not fail a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deploykit.errors import UsageError
from deploykit.hazards import HAZARDS
from deploykit.metrics import VERDICTS
from deploykit.paths import KNOWN_DIVERGENCES
from deploykit.spec import ConvTransposeSpec
from deploykit.yamlfile import read_yaml


@dataclass(frozen=True)
class Divergence:
    id: str
    backends: tuple[str, ...]
    hazard: str
    verdicts: tuple[str, ...]
    reason: str
    upstream: str

    def matches(self, spec: ConvTransposeSpec, backend: str, verdict: str) -> bool:
        return backend in self.backends and verdict in self.verdicts and HAZARDS[self.hazard].applies(spec)


#: Entry keys and whether each is required; `upstream` may be left out for a divergence not yet filed.
FIELDS: dict[str, bool] = {"id": True, "backends": True, "hazard": True, "verdicts": True, "reason": True, "upstream": False}
LISTS = ("backends", "verdicts")
#: Verdicts a divergence may explain: every verdict but `pass`, which needs no explaining.
EXPLAINABLE = tuple(v for v in VERDICTS if v != "pass")


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
        try:
            divergence = _entry(entry)
        except ValueError as error:
            raise UsageError(f"{where}: {error}") from None
        earlier = next((i for i, d in enumerate(table) if d.id == divergence.id), None)
        if earlier is not None:
            raise UsageError(f"{where}: id {divergence.id!r} is already used by entry {earlier}")
        table.append(divergence)
    return table


def _entry(entry: object) -> Divergence:
    """One entry checked by schema: known keys, the right types, known hazard and verdict names."""
    if not isinstance(entry, dict):
        raise ValueError(f"expected a mapping with {', '.join(FIELDS)}, got {entry!r}")
    unknown = sorted(map(str, set(entry) - set(FIELDS)))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; expected {', '.join(FIELDS)}")
    missing = [key for key, required in FIELDS.items() if required and key not in entry]
    if missing:
        raise ValueError(f"lacks {', '.join(missing)}; needs {', '.join(k for k, r in FIELDS.items() if r)}")
    for key, value in entry.items():
        if key in LISTS and not (isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)):
            raise ValueError(f"{key} must be a non-empty list of names, got {value!r}")
        if key not in LISTS and not (isinstance(value, str) and value.strip()):
            raise ValueError(f"{key} must be a non-empty string, got {value!r}")
    if entry["hazard"] not in HAZARDS:
        raise ValueError(f"unknown hazard {entry['hazard']!r}; known: {', '.join(HAZARDS)}")
    for verdict in entry["verdicts"]:
        if verdict not in EXPLAINABLE:
            raise ValueError(f"unknown verdict {verdict!r}; known: {', '.join(EXPLAINABLE)}")
    return Divergence(
        id=entry["id"],
        backends=tuple(entry["backends"]),
        hazard=entry["hazard"],
        verdicts=tuple(entry["verdicts"]),
        reason=entry["reason"],
        upstream=entry.get("upstream", ""),
    )


def match(table: list[Divergence], spec: ConvTransposeSpec, backend: str, verdict: str) -> Divergence | None:
    for divergence in table:
        if divergence.matches(spec, backend, verdict):
            return divergence
    return None
