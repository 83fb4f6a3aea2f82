"""`deploykit lint`: hazards of every ConvTranspose node of any ONNX model, before deployment.

Hazards come from `conformance/known_divergences.yaml` (what real runtimes get wrong, with the
upstream link), spec violations (every runtime should refuse), and advice that is not a runtime
bug (checkerboard artifacts).  With a results database, each node also gets the conformance
verdicts recorded for its exact config, or for the nearest recorded configs of the same kind
(never a grouped or float16 result for a plain float32 layer).  A node whose shapes cannot be
resolved fails lint (see `report.export.lint_summary`): its hazards are unknown.  So does a new
finding recorded for its exact config on a requested backend.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from deploykit.onnxio.read import conv_transpose_nodes
from deploykit.op.hazards import HAZARDS
from deploykit.op.spec import ConvTransposeSpec
from deploykit.results import divergences
from deploykit.results.store import Store

#: Lint looks at every deployment runtime (`backends.deployment_targets()`) unless --backends says
#: otherwise.  `onnx-shape-inference` is always included: every toolchain that reads shapes from
#: ONNX inherits its answer.
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
    verdict_source: str | None = None  # "exact" | "similar" (same class, not the same config)
    recorded_findings: list[dict] = field(default_factory=list)  # exact-config verdicts that fail lint


#: Recorded verdicts that are no finding; a known divergence is none either (it is a hazard row).
NOT_FINDINGS = ("pass", "unsupported", "unavailable")


def recorded_findings(verdicts: list[dict], source: str | None, backends: list[str]) -> list[dict]:
    """Verdicts recorded for this exact config that are new findings on a requested backend.

    A conformance run already saw this very layer drift, crash or be rejected there, so lint fails
    as the run did.  Verdicts of a similar config are shown, never counted: they are not this layer.
    """
    if source != "exact":
        return []
    return [v for v in verdicts
            if v["backend"] in backends and v["verdict"] not in NOT_FINDINGS and not v.get("known_divergence")]


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


def _class_key(spec: dict) -> dict:
    """What decides how a runtime treats a config: a recorded verdict is only cited across equal keys.

    A runtime takes a different code path (or refuses) on each of these, so a verdict recorded for
    a grouped, SAME-padded or float16 config says nothing about a plain float32 layer.
    """
    rank = len(spec["input_shape"]) - 2
    pads = list(spec.get("pads") or [0] * (2 * rank))
    return {
        "rank": rank,
        "grouped": spec["group"] > 1,
        "auto_pad": "same" if str(spec["auto_pad"]).startswith("SAME") else "explicit",
        "output_shape": spec["output_shape"] is not None,
        "dtype": spec["dtype"],
        "output_padding_ge_stride": any(op >= s for op, s in zip(spec["output_padding"], spec["strides"])),
        "asymmetric_pads": spec["output_shape"] is None and pads[:rank] != pads[rank:],
    }


def _signature(spec: dict) -> dict:
    """Attributes whose differences count as distance between configs of the same class."""
    return {
        "kernel_shape": spec["kernel_shape"],
        "strides": spec["strides"],
        "dilations": spec["dilations"],
        "output_padding": spec["output_padding"],
        "group": spec["group"],
        "auto_pad": spec["auto_pad"],
        "bias": spec.get("bias"),
        "opset": spec.get("opset"),
        "weights_as_inputs": spec.get("weights_as_inputs"),
    }


def db_verdicts(store: Store, spec: ConvTransposeSpec, nearest: int = 2) -> tuple[list[dict], str | None]:
    """Verdicts for this exact config id, else for the closest configs of the same class.

    Candidates must agree on `_class_key` (rank, grouped, padding mode, output_shape, dtype,
    output_padding >= stride, asymmetric pads); among those, distance counts differing attributes.
    """
    rows = store.db.execute(
        "SELECT config_id, label, backend, verdict, reason, known_divergence, spec FROM results ORDER BY recorded_at DESC"
    ).fetchall()
    exact = [r for r in rows if r[0] == spec.id]
    if exact:
        return [_verdict_row(r) for r in _latest_per_backend(exact)], "exact"
    canonical = spec.canonical()
    target_class, target = _class_key(canonical), _signature(canonical)
    scored: dict[str, tuple[int, list]] = {}
    for row in rows:
        try:
            candidate = json.loads(row[6])
            if _class_key(candidate) != target_class:
                continue
            signature = _signature(candidate)
        except (TypeError, ValueError, KeyError):
            continue
        distance = sum(signature[k] != target[k] for k in target)
        scored.setdefault(row[0], (distance, []))[1].append(row)
    if not scored:
        return [], None
    closest = sorted(scored.values(), key=lambda item: item[0])[:nearest]
    picked = []
    for distance, config_rows in closest:
        for row in _latest_per_backend(config_rows):
            picked.append(_verdict_row(row) | {"distance": distance})
    return picked, "similar"


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
    reports = []
    try:
        for found in conv_transpose_nodes(model, shapes):
            spec = found.spec
            report = NodeReport(
                node=found.name,
                module_path=found.module_path,
                label=spec.replace(name=None).label if spec else None,
                config_id=spec.id if spec else None,
                problem=found.problem,
            )
            if spec is not None:
                report.findings = findings_for(spec, backends, table)
                if store is not None:
                    report.verdicts, report.verdict_source = db_verdicts(store, spec)
                    report.recorded_findings = recorded_findings(report.verdicts, report.verdict_source, backends)
            reports.append(report)
    except sqlite3.DatabaseError as error:
        from deploykit.errors import UsageError
        from deploykit.results import dbcheck

        if db is not None and dbcheck.is_damage(error):  # only a database raises it
            raise dbcheck.damaged(db, error) from None
        raise UsageError(f"{db} is not a deploykit results database ({error})") from None
    finally:
        if store is not None:
            store.close()
    return reports


def as_json(reports: list[NodeReport]) -> list[dict]:
    return [asdict(r) for r in reports]
