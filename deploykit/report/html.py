"""A self-contained HTML report of a run: one file, no network access (no CDN scripts or fonts).

Laid out from a RunSummary: the run's status and counts, a verdict map (configs x backends, one
cell per result, coloured by verdict; hover shows the figures, a click pins them), the bound_ratio
distribution per backend on a log scale (inline SVG), latency per config and backend when the run
was timed, the non-pass table (click a header to sort, type to filter), and the environment.
The few lines of script only sort, filter and show details: every figure is in the page as text.
"""

from __future__ import annotations

from deploykit.report.cells import fmt
from deploykit.report.escape import html_text
from deploykit.report.terminal import incomplete_notice, narrow_sum_line
from deploykit.results.result import Result
from deploykit.results.summary import RATIO_EDGES, RunSummary, is_failure

_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em;color:#1d2228}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em} table{border-collapse:collapse}
td,th{border:1px solid #d0d5da;padding:2px 6px;text-align:left} th{background:#eef1f4;cursor:pointer}
.banner{padding:.6em 1em;border-radius:4px;margin:.5em 0} .bad{background:#fde2e1} .ok{background:#e2f5e6}
.warn{background:#fff3cd;font-weight:bold}
#map td.c{width:14px;height:12px;padding:0;cursor:pointer} #map th.l{font-weight:normal;background:#fff;cursor:default;padding:0 4px}
#map{font-size:10px} #mapbox{max-height:70vh;overflow:auto;border:1px solid #d0d5da;display:inline-block}
#map thead th{position:sticky;top:0;z-index:1}
#detail{position:sticky;top:0;background:#f7f9fb;border:1px solid #d0d5da;padding:.5em;min-height:2.6em;white-space:pre-wrap}
.v-pass{background:#3fa34d} .v-known{background:#9aa5b1} .v-unsupported,.v-unavailable{background:#e4e7eb}
.v-drift{background:#d7263d} .v-shape-mismatch{background:#f46036} .v-rejected{background:#c05299}
.v-accepted-invalid{background:#7b2cbf} .v-nonfinite{background:#1b998b} .v-crash{background:#000}
.v-timeout{background:#f2a541} .legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 10px;vertical-align:middle}
svg text{font-size:10px} .num{text-align:right;font-variant-numeric:tabular-nums}
"""

_SCRIPT = """
const detail=document.getElementById('detail');
document.querySelectorAll('#map td.c').forEach(c=>c.addEventListener('click',()=>{detail.textContent=c.title}));
document.querySelectorAll('table.sortable th').forEach((th,i)=>th.addEventListener('click',()=>{
  const body=th.closest('table').tBodies[0];const rows=[...body.rows];const asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
  const key=r=>{const t=r.cells[i].textContent;const n=parseFloat(t);return isNaN(n)?t:n};
  rows.sort((a,b)=>{const x=key(a),y=key(b);return (x>y?1:x<y?-1:0)*(asc?1:-1)});rows.forEach(r=>body.appendChild(r));}));
const filter=document.getElementById('filter');
if(filter){filter.addEventListener('input',()=>{const q=filter.value.toLowerCase();
  document.querySelectorAll('#nonpass tbody tr').forEach(r=>{r.style.display=r.textContent.toLowerCase().includes(q)?'':'none'})})}
"""


def _e(value) -> str:
    """Every string on the page goes through here: escaped, with invisible characters written out."""
    return html_text(value)


def _verdict_class(result: Result) -> str:
    return "v-known" if result.known_divergence else f"v-{result.verdict}"


def _cell_title(r: Result) -> str:
    parts = [f"{r.label} on {r.backend_label}: {r.verdict}", f"config {r.config_id}, {r.dtype}"]
    if r.bound_ratio is not None:
        parts.append(f"bound_ratio {fmt(r.bound_ratio)}, max abs error {fmt(r.max_abs_err)}, max ulp {r.max_ulp_err}")
    if r.latency_median_ms is not None:
        parts.append(f"latency median {fmt(r.latency_median_ms, '.4g')} ms, CV {fmt(r.latency_cv, '.1%')}")
    if r.known_divergence:
        parts.append(f"known divergence {r.known_divergence}")
    if r.reason:
        parts.append(r.reason)
    return "\n".join(parts)


def _header(summary: RunSummary) -> list[str]:
    run = summary.run or {}
    verdict = "bad" if summary.new_findings else "ok"
    lines = [f"<h1>deploykit conformance: matrix {_e(run.get('matrix', '-'))}, run {_e(run.get('run_id', '-'))}</h1>"]
    notice = incomplete_notice(summary)
    lines.append(f'<div class="banner warn" id="status">{_e(notice)}</div>' if notice
                 else '<div class="banner ok" id="status">Complete: every planned result is recorded.</div>')
    lines.append(f'<div class="banner {verdict}" id="counts">{summary.total} results: {summary.passed} pass,'
                 f" {summary.known} known divergences, {summary.new_findings} new findings.</div>")
    return lines


def _legend() -> str:
    names = ["pass", "known", "unsupported", "drift", "shape-mismatch", "rejected", "accepted-invalid", "nonfinite",
             "crash", "timeout"]
    return '<p class="legend">' + "".join(f'<span class="v-{n}"></span>{n}' for n in names) + "</p>"


def _verdict_map(summary: RunSummary, results: list[Result]) -> list[str]:
    grid = summary.grid
    lines = ["<h2>Verdict map</h2>", _legend(), '<div id="detail">Click a cell for its figures; hover for a preview.</div>',
             '<div id="mapbox"><table id="map"><thead><tr><th class="l">config</th>'
             + "".join(f'<th class="l">{_e(b)}</th>' for b in grid.backends) + "</tr></thead><tbody>"]
    for label, row in zip(grid.configs, grid.cells):
        cells = "".join(
            "<td></td>" if index is None else
            f'<td class="c {_verdict_class(results[index])}" title="{_e(_cell_title(results[index]))}"></td>'
            for index in row
        )
        lines.append(f'<tr><th class="l">{_e(label)}</th>{cells}</tr>')
    lines.append("</tbody></table></div>")
    return lines


def _histogram_svg(backend: str, data: dict) -> str:
    """One backend's bound_ratio distribution: bars over log10(ratio), a red line at ratio 1."""
    width, height, left = 520, 90, 10
    counts = data["bins"]
    peak = max(counts + [1])
    step = (width - 2 * left) / len(counts)
    bars = []
    for index, count in enumerate(counts):
        if count:
            h = (height - 30) * count / peak
            bars.append(f'<rect x="{left + index * step:.1f}" y="{height - 15 - h:.1f}" width="{step - 1:.1f}" height="{h:.1f}"'
                        f' fill="#3f72af"><title>{count} result(s) with ratio in [{RATIO_EDGES[index]:.3g}, {RATIO_EDGES[index + 1]:.3g})</title></rect>')
    one = left + (len(counts) / 2) * step  # ratio 1 is the middle edge
    labels = "".join(
        f'<text x="{left + (k + 6) * 4 * step:.1f}" y="{height - 3}" text-anchor="middle">1e{k}</text>' for k in range(-6, 7, 2)
    )
    extra = f"zero: {data['zero']}, below 1e-6: {data['below']}, at or above 1e6: {data['above']}"
    return (f'<figure><figcaption>{_e(backend)} ({extra})</figcaption><svg class="hist" width="{width}" height="{height}"'
            f' role="img" aria-label="bound_ratio histogram for {_e(backend)}">{"".join(bars)}'
            f'<line x1="{one:.1f}" y1="5" x2="{one:.1f}" y2="{height - 15}" stroke="#d7263d"/>{labels}</svg></figure>')


def _histograms(summary: RunSummary) -> list[str]:
    if not summary.ratio_histograms:
        return []
    lines = ["<h2>bound_ratio per backend (log scale; right of the red line is beyond the bound)</h2>"]
    lines += [_histogram_svg(backend, data) for backend, data in summary.ratio_histograms.items()]
    return lines


def _latency(summary: RunSummary, results: list[Result]) -> list[str]:
    grid = summary.grid
    if not any(r.latency_median_ms is not None for r in results):
        return []
    lines = ["<h2>Latency: median ms per config and backend</h2>",
             '<table class="sortable" id="latency"><thead><tr><th>config</th>'
             + "".join(f"<th>{_e(b)}</th>" for b in grid.backends) + "</tr></thead><tbody>"]
    for label, row in zip(grid.configs, grid.cells):
        values = [None if i is None else results[i].latency_median_ms for i in row]
        lines.append(f"<tr><td>{_e(label)}</td>" + "".join(f'<td class="num">{fmt(v, ".4g")}</td>' for v in values) + "</tr>")
    lines.append("</tbody></table>")
    return lines


def _non_pass(summary: RunSummary) -> list[str]:
    if not summary.non_pass:
        return ["<h2>Every non-pass result</h2><p>None.</p>"]
    lines = ["<h2>Every non-pass result</h2>", '<input id="filter" placeholder="filter rows" size="40">',
             '<table class="sortable" id="nonpass"><thead><tr><th>config</th><th>backend</th><th>verdict</th>'
             "<th>new?</th><th>bound_ratio</th><th>reason</th><th>known divergence</th></tr></thead><tbody>"]
    for r in summary.non_pass:
        lines.append(f"<tr><td>{_e(r.label)}</td><td>{_e(r.backend_label)}</td><td>{_e(r.verdict)}</td>"
                     f"<td>{'NEW' if is_failure(r) else ''}</td><td class='num'>{fmt(r.bound_ratio)}</td>"
                     f"<td>{_e(r.reason)}</td><td>{_e(r.known_divergence or '')}</td></tr>")
    lines.append("</tbody></table>")
    if summary.known_seen:
        lines.append("<h3>Known divergences seen</h3><ul>")
        lines += [f"<li><b>{_e(e.id)}</b>: {_e(e.reason)} ({_e(e.upstream)})</li>" for e in summary.known_seen]
        lines.append("</ul>")
    return lines


def _environment(summary: RunSummary) -> list[str]:
    env = (summary.run or {}).get("environment") or {}
    rows = [(k, env.get(k)) for k in ("platform", "python", "cpu", "cpu_count", "gpus")]
    rows += [(f"package {k}", v) for k, v in sorted((env.get("packages") or {}).items())]
    lines = ["<h2>Environment</h2>", '<table id="environment">']
    lines += [f"<tr><th>{_e(k)}</th><td>{_e(v if v not in (None, []) else '-')}</td></tr>" for k, v in rows]
    lines.append("</table>")
    if summary.narrow_sums:
        lines.append("<h3>Accumulation below float32 (inside each backend's measured model, so not a defect)</h3><ul>")
        lines += [f"<li>{_e(narrow_sum_line(item))}</li>" for item in summary.narrow_sums]
        lines.append("</ul>")
    return lines


def to_html(summary: RunSummary, results: list[Result]) -> str:
    body = (_header(summary) + _verdict_map(summary, results) + _histograms(summary) + _latency(summary, results)
            + _non_pass(summary) + _environment(summary))
    title = f"deploykit conformance, run {(summary.run or {}).get('run_id', '')}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + _e(title) + "</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + f"\n<script>{_SCRIPT}</script></body></html>\n")
