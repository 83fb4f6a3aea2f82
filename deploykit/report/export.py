"""Terminal reports for `deploykit export` and `deploykit lint`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from deploykit.op.hazards import HAZARDS
from deploykit.report.cells import fmt
from deploykit.report.escape import term, term_line
from deploykit.results import divergences


def compact(names: list[str | None], limit: int = 4) -> str:
    """`a, b, c, d (+70 more)`: enough to find the layers, short enough for one cell."""
    shown = [name or "-" for name in names[:limit]]
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(shown) + more


def _where(layer) -> str:
    """`node n, module m` for one node; `3 nodes: a, b, c; modules x, y, z` for a shared config."""
    modules = [m for m in layer.module_paths if m]
    if layer.count == 1:
        return f"node {layer.nodes[0]}" + (f", module {modules[0]}" if modules else "")
    return f"{layer.count} nodes: {compact(layer.nodes)}" + (f"; modules {compact(modules)}" if modules else "")


def _shapes(check) -> str:
    return ", ".join("x".join(map(str, shape)) for shape in check.input_shapes or []) or "-"


def _outputs_table(report, console: Console) -> None:
    outputs = Table(title="Whole model vs torch float64 eager", title_justify="left")
    for column in ("backend", "inputs", "output", "verdict", "max_abs_err", "max_rel_err", "rel_l2_err", "reason"):
        outputs.add_column(column)
    for o in report.outputs:
        outputs.add_row(term(o.backend), _shapes(o), term(o.output), term(o.verdict), fmt(o.max_abs_err), fmt(o.max_rel_err),
                        fmt(o.rel_l2_err), term(o.reason))
    console.print(outputs)


def _layers_table(report, console: Console) -> None:
    if not report.layers:
        console.print("ConvTranspose layers: none in this model")
        return
    layers = Table(title="ConvTranspose layers through the conformance engine (one row per distinct config)", title_justify="left")
    for column in ("config", "input", "nodes", "modules", "backend", "verdict", "reason"):
        layers.add_column(column, overflow="fold")
    for layer in report.layers:
        config = layer.label or "unresolved"
        shape = "x".join(map(str, layer.input_shape)) if layer.input_shape else "-"
        nodes = f"{layer.count}: {compact(layer.nodes, 2)}"
        modules = compact([m for m in layer.module_paths if m], 3) or "-"
        if layer.problem or not layer.results:
            layers.add_row(term(config), shape, term(nodes), term(modules), "-", "not checked", term(layer.problem or ""))
        for r in layer.results:
            reason = r["reason"] + (f" [known: {r['known_divergence']}]" if r.get("known_divergence") else "")
            layers.add_row(term(config), shape, term(nodes), term(modules), term(r["backend"]), term(r["verdict"]), term(reason))
    console.print(layers)


def _failure_lines(report, console: Console) -> None:
    known = {d.id: HAZARDS[d.hazard].summary for d in divergences.load()}
    for layer in report.layers:
        if layer.unresolved:
            console.print(term_line(f"UNRESOLVED {_where(layer)}: {layer.problem}"), soft_wrap=True)
        elif layer.problem:
            console.print(term_line(f"FAIL {layer.label} ({_where(layer)}): {layer.problem}"), soft_wrap=True)
        for r in layer.failures():
            rule = f" [rule: {r['known_divergence']}, {known[r['known_divergence']]}]" if r.get("known_divergence") in known else ""
            console.print(term_line(f"FAIL {layer.label} ({_where(layer)}) on {r['backend']}: {r['verdict']}: {r['reason']}{rule}"), soft_wrap=True)


def export_summary(report, console: Console) -> None:
    console.print(term_line(f"exported {report.target} -> {report.onnx_path} ({report.exporter} exporter, opset {report.opset}, {report.dtype})"))
    if report.opset_warning:
        console.print(term_line(f"WARNING: {report.opset_warning}"), soft_wrap=True)
    if report.dynamic_axes:
        symbols = "; ".join(f"{name}: " + ", ".join(f"axis {a}={s}" for a, s in sorted(named.items()))
                            for name, named in report.dynamic_axes.items())
        console.print(term_line(f"dynamic axes: {symbols}"), soft_wrap=True)
    console.print(term_line(f"onnx.checker (full check): {report.checker}"))
    _outputs_table(report, console)
    _layers_table(report, console)
    _failure_lines(report, console)
    counts = report.counts()
    console.print(term_line(
        f"{counts['nodes']} ConvTranspose node(s) in {counts['configs']} distinct config(s), {counts['unresolved']} unresolved"
    ))
    if report.engine:
        console.print(term_line(f"TensorRT engine written to {report.engine}"))
    console.print("verified: every output and layer passes" if report.exit_code == 0 else "NOT verified: see the failures above")


def _lint_verdicts(reports, console: Console) -> None:
    for report in reports:
        if not report.verdicts:
            continue
        if report.verdict_source == "exact":
            console.print(term_line(f"{report.node}: recorded verdicts (this exact config):"))
        else:
            console.print(term_line(f"{report.node}: recorded verdicts from a similar config of the same kind, not this one:"))
        for v in report.verdicts:
            distance = f", distance {v['distance']}" if "distance" in v else ""
            known = f" [known: {v['known_divergence']}]" if v.get("known_divergence") else ""
            console.print(term_line(f"  {v['backend']}: {v['verdict']} on {v['label']}{distance}{known} {v['reason']}".rstrip()))


def _recorded_lines(reports, console: Console) -> int:
    """One RECORDED line per new finding recorded for a node's exact config; how many."""
    count = 0
    for report in reports:
        for v in report.recorded_findings:
            count += 1
            reason = f": {v['reason']}" if v["reason"] else ""
            console.print(term_line(f"RECORDED {report.node}: {v['backend']}: {v['verdict']} on this exact config ({v['label']}){reason}"), soft_wrap=True)
    return count


def lint_summary(reports, console: Console, model: str) -> int:
    """Print the findings; return how many fail lint: hazards, invalid nodes, unresolved nodes and
    new findings recorded for a node's exact config (`--db`).

    Advice is not counted.  An unresolved node fails lint: its hazards are unknown, and passing it
    silently would tell the user the model is safe.
    """
    table = Table(title=term_line(f"ConvTranspose lint: {model}"), title_justify="left")
    for column in ("node", "module", "config", "kind", "rule", "backends", "message"):
        table.add_column(column, overflow="fold")
    hazards = 0
    unresolved = [report for report in reports if report.problem and report.config_id is None]
    for report in reports:
        if report.problem:
            table.add_row(term(report.node), term(report.module_path or "-"), term(report.label or "-"), "unresolved", "-", "-",
                          term(report.problem))
        if not report.findings and not report.problem:
            table.add_row(term(report.node), term(report.module_path or "-"), term(report.label or "-"), "ok", "-", "-", "no known hazard")
        for f in report.findings:
            hazards += f.kind in ("hazard", "invalid")
            message = f.message + (f" ({f.upstream})" if f.upstream else "") + (f"; fix: {f.fix}" if f.fix else "")
            table.add_row(term(report.node), term(report.module_path or "-"), term(report.label or "-"), f.kind, term(f.rule),
                          term(", ".join(f.backends)), term(message))
    console.print(table)
    _lint_verdicts(reports, console)
    for report in unresolved:
        module = f" (module {report.module_path})" if report.module_path else ""
        console.print(term_line(f"UNRESOLVED {report.node}{module}: {report.problem}"), soft_wrap=True)
    recorded = _recorded_lines(reports, console)
    tail = f", {recorded} recorded finding(s)" if recorded else ""
    console.print(f"{len(reports)} ConvTranspose node(s), {hazards} hazard(s), {len(unresolved)} unresolved{tail}")
    return hazards + len(unresolved) + recorded
