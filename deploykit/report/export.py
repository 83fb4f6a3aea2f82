"""Terminal reports for `deploykit export` and `deploykit lint`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from deploykit import divergences
from deploykit.hazards import HAZARDS
from deploykit.report.cells import fmt


def export_summary(report, console: Console) -> None:
    console.print(Text(f"exported {report.target} -> {report.onnx_path} ({report.exporter} exporter, opset {report.opset}, {report.dtype})"))
    console.print(Text(f"onnx.checker (full check): {report.checker}"))
    outputs = Table(title="Whole model vs torch float64 eager", title_justify="left")
    for column in ("backend", "output", "verdict", "max_abs_err", "max_rel_err", "rel_l2_err", "reason"):
        outputs.add_column(column)
    for o in report.outputs:
        outputs.add_row(o.backend, o.output, o.verdict, fmt(o.max_abs_err), fmt(o.max_rel_err), fmt(o.rel_l2_err), Text(o.reason))
    console.print(outputs)
    layers = Table(title="ConvTranspose layers through the conformance engine", title_justify="left")
    for column in ("node", "module", "config", "backend", "verdict", "reason"):
        layers.add_column(column, overflow="fold")
    for layer in report.layers:
        if layer.problem or not layer.results:
            layers.add_row(layer.node, layer.module_path or "-", layer.label or "-", "-", "not checked", Text(layer.problem or ""))
        for r in layer.results:
            reason = r["reason"] + (f" [known: {r['known_divergence']}]" if r.get("known_divergence") else "")
            layers.add_row(layer.node, layer.module_path or "-", layer.label or "-", r["backend"], r["verdict"], Text(reason))
    console.print(layers)
    known = {d.id: HAZARDS[d.hazard].summary for d in divergences.load()}
    for layer in report.layers:
        for r in layer.failures():
            where = f"module {layer.module_path}, " if layer.module_path else ""
            rule = f" [rule: {r['known_divergence']}, {known[r['known_divergence']]}]" if r.get("known_divergence") in known else ""
            console.print(Text(f"FAIL {layer.node} ({where}{layer.label}) on {r['backend']}: {r['verdict']}: {r['reason']}{rule}"), soft_wrap=True)
    if report.engine:
        console.print(Text(f"TensorRT engine written to {report.engine}"))
    console.print("verified: every output and layer passes" if report.exit_code == 0 else "NOT verified: see the failures above")


def lint_summary(reports, console: Console, model: str) -> int:
    """Print the findings; return the number of hazards (advice is not counted)."""
    table = Table(title=f"ConvTranspose lint: {model}", title_justify="left")
    for column in ("node", "module", "config", "kind", "rule", "backends", "message"):
        table.add_column(column, overflow="fold")
    hazards = 0
    for report in reports:
        if report.problem:
            table.add_row(report.node, report.module_path or "-", "-", "unresolved", "-", "-", Text(report.problem))
        if not report.findings and not report.problem:
            table.add_row(report.node, report.module_path or "-", report.label or "-", "ok", "-", "-", "no known hazard")
        for f in report.findings:
            hazards += f.kind in ("hazard", "invalid")
            message = f.message + (f" ({f.upstream})" if f.upstream else "") + (f"; fix: {f.fix}" if f.fix else "")
            table.add_row(report.node, report.module_path or "-", report.label or "-", f.kind, f.rule, ", ".join(f.backends), Text(message))
    console.print(table)
    for report in reports:
        if report.verdicts:
            console.print(Text(f"{report.node}: recorded verdicts ({report.verdict_source} config):"))
            for v in report.verdicts:
                distance = f", distance {v['distance']}" if "distance" in v else ""
                known = f" [known: {v['known_divergence']}]" if v.get("known_divergence") else ""
                console.print(Text(f"  {v['backend']}: {v['verdict']} on {v['label']}{distance}{known} {v['reason']}".rstrip()))
    console.print(f"{len(reports)} ConvTranspose node(s), {hazards} hazard(s)")
    return hazards
