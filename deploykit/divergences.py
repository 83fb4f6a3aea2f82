"""Known divergences: runtime behaviour that differs from the ONNX text and is already reported
upstream.  A result that matches one is still shown, marked `known`, and does not fail a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from deploykit.errors import UsageError
from deploykit.hazards import HAZARDS
from deploykit.paths import KNOWN_DIVERGENCES
from deploykit.spec import ConvTransposeSpec


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


def load(path: Path = KNOWN_DIVERGENCES) -> list[Divergence]:
    try:
        entries = yaml.safe_load(Path(path).read_text()) or []
    except FileNotFoundError:
        return []
    except yaml.YAMLError as error:
        raise UsageError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    table = []
    for index, entry in enumerate(entries):
        try:
            divergence = Divergence(
                id=str(entry["id"]),
                backends=tuple(entry["backends"]),
                hazard=str(entry["hazard"]),
                verdicts=tuple(entry["verdicts"]),
                reason=str(entry["reason"]),
                upstream=str(entry.get("upstream", "")),
            )
        except (KeyError, TypeError) as error:
            raise UsageError(f"{path}: entry {index} lacks {error}; needs id, backends, hazard, verdicts, reason") from None
        if divergence.hazard not in HAZARDS:
            raise UsageError(f"{path}: entry {divergence.id} names unknown hazard {divergence.hazard!r}")
        table.append(divergence)
    return table


def match(table: list[Divergence], spec: ConvTransposeSpec, backend: str, verdict: str) -> Divergence | None:
    for divergence in table:
        if divergence.matches(spec, backend, verdict):
            return divergence
    return None
