"""`deploykit lint`: hazards of every ConvTranspose node of any ONNX model, before deployment.

Hazards come from `conformance/known_divergences.yaml` (what real runtimes get wrong, with the
upstream link), spec violations (every runtime should refuse), and advice that is not a runtime
bug (checkerboard artifacts).  With a results database, each node also gets the conformance
verdicts recorded for its exact config, or for the nearest configs in the matrix.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from deploykit import divergences
from deploykit.hazards import HAZARDS
from deploykit.onnxread import conv_transpose_nodes, module_path
from deploykit.spec import ConvTransposeSpec
from deploykit.store import Store

#: Lint looks at these runtimes unless --backends says otherwise.  `onnx-shape-inference` is
#: always included: every toolchain that reads shapes from ONNX inherits its answer.
DEFAULT_BACKENDS = ("ort-cpu", "ort-cuda", "torch-cpu", "torch-cuda", "tensorrt")
SHAPE_INFERENCE = "onnx-shape-inference"


@dataclass
class Finding:
    kind: str  # hazard | invalid | advice
    rule: str
    backends: list[str]
    message: str
    upstream: str = ""
    fix: str = ""


@dataclass
class NodeReport:
    node: str
    module_path: str | None
    label: str | None
    config_id: str | None
    problem: str | None = None
    findings: list[Finding] = field(default_factory=list)
    verdicts: list[dict] = field(default_factory=list)
    verdict_source: str | None = None  # "exact" | "nearest"


def _advice(spec: ConvTransposeSpec) -> list[Finding]:
    found = []
    if HAZARDS["checkerboard"].applies(spec):
        kernel, strides = list(spec.kernel_shape), list(spec.strides)
        found.append(Finding(
            "advice", "checkerboard", [],
            f"kernel {kernel} is not a multiple of stride {strides}: uneven overlap gives checkerboard artifacts",
            fix="use a kernel that is a multiple of the stride (e.g. k4 s2), or nearest/bilinear resize + Conv",
        ))
    return found


def findings_for(spec: ConvTransposeSpec, backends: list[str], table: list[divergences.Divergence]) -> list[Finding]:
    found: list[Finding] = []
    for violation in spec.violations():
        found.append(Finding("invalid", "onnx-spec", backends, f"breaks the ONNX spec: {violation}"))
    relevant = set(backends) | {SHAPE_INFERENCE}
    for entry in table:
        hit = sorted(set(entry.backends) & relevant)
        if hit and HAZARDS[entry.hazard].applies(spec):
            found.append(Finding("hazard", entry.id, hit, entry.reason, entry.upstream))
    return found + _advice(spec)


def _signature(spec: dict) -> dict:
    """The attributes that decide how a runtime treats a config (distance counts differences)."""
    rank = len(spec["input_shape"]) - 2
    return {
        "rank": rank,
        "kernel_shape": spec["kernel_shape"],
        "strides": spec["strides"],
        "dilations": spec["dilations"],
        "output_padding": spec["output_padding"],
        "group": spec["group"] > 1,
        "auto_pad": spec["auto_pad"],
        "output_shape": spec["output_shape"] is not None,
        "dtype": spec["dtype"],
    }


def db_verdicts(store: Store, spec: ConvTransposeSpec, nearest: int = 2) -> tuple[list[dict], str | None]:
    """Verdicts for this exact config id, else for the configs closest in the attributes that matter."""
    rows = store.db.execute(
        "SELECT config_id, label, backend, verdict, reason, known_divergence, spec FROM results ORDER BY recorded_at DESC"
    ).fetchall()
    exact = [r for r in rows if r[0] == spec.id]
    if exact:
        return [_verdict_row(r) for r in _latest_per_backend(exact)], "exact"
    target = _signature(spec.canonical())
    scored: dict[str, tuple[int, list]] = {}
    for row in rows:
        try:
            candidate = _signature(json.loads(row[6]))
        except (TypeError, ValueError, KeyError):
            continue
        distance = sum(candidate[k] != target[k] for k in target)
        scored.setdefault(row[0], (distance, []))[1].append(row)
    if not scored:
        return [], None
    closest = sorted(scored.values(), key=lambda item: item[0])[:nearest]
    picked = []
    for distance, config_rows in closest:
        for row in _latest_per_backend(config_rows):
            picked.append(_verdict_row(row) | {"distance": distance})
    return picked, "nearest"


def _latest_per_backend(rows: list) -> list:
    seen, kept = set(), []
    for row in rows:
        if row[2] not in seen:
            seen.add(row[2])
            kept.append(row)
    return kept


def _verdict_row(row) -> dict:
    config_id, label, backend, verdict, reason, known, _ = row
    return {"config_id": config_id, "label": label, "backend": backend, "verdict": verdict, "reason": reason, "known_divergence": known}


def lint(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None, backends: list[str], db: Path | None) -> list[NodeReport]:
    table = divergences.load()
    store = Store(db, create=False) if db else None
    nodes = {index: node for index, node in enumerate(model.graph.node)}
    reports = []
    try:
        for found in conv_transpose_nodes(model, shapes):
            spec = found.spec
            report = NodeReport(
                node=found.name,
                module_path=module_path(nodes[found.index]),
                label=spec.replace(name=None).label if spec else None,
                config_id=spec.id if spec else None,
                problem=found.problem,
            )
            if spec is not None:
                report.findings = findings_for(spec, backends, table)
                if store is not None:
                    report.verdicts, report.verdict_source = db_verdicts(store, spec)
            reports.append(report)
    except sqlite3.DatabaseError as error:
        from deploykit.errors import UsageError

        raise UsageError(f"{db} is not a deploykit results database ({error})") from None
    finally:
        if store is not None:
            store.close()
    return reports


def as_json(reports: list[NodeReport]) -> list[dict]:
    return [asdict(r) for r in reports]
