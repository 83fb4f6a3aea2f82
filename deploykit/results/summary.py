"""A run's results summarised as plain data: every report renders this and computes nothing.

`summarize(results, run, known)` counts verdicts per backend, picks the worst drifts, lists every
non-pass result with the known divergence it matches, the configs where ONNX shape inference
disagrees with the spec text, the backends that sum below float32, and the latency tables.  The
terminal table, Markdown, JSON, JUnit and HTML renderers in `deploykit.report` only lay it out.
`known` is the known-divergence table the run was judged with (stored with the run), so a report
of an old run never changes when the YAML does.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Iterable

from deploykit.results.dbcheck import stored_spec
from deploykit.results.divergences import Divergence, match
from deploykit.results.result import Result, Run
from deploykit.vocabulary import SKIPPED, VERDICTS


@dataclass
class BackendCounts:
    backend: str  # with the precision where it is not fp32, e.g. "ort-cuda (tf32)"
    verdicts: dict[str, int]
    known: int


@dataclass
class NarrowSums:
    """A backend and dtype whose accumulation model sums in float16/bfloat16, with the evidence."""

    backend: str
    dtype: str
    model: str
    results: int
    beyond_float32: int  # results one float32 sum could not have produced
    worst: float | None


@dataclass
class ShapeDisagreement:
    label: str
    inferred: list
    expected: list
    known: str | None  # the known divergence id, or None: a new finding
    upstream: str | None


@dataclass
class Speed:
    backend: str
    timed: int
    times_fastest: float | None  # geometric mean of latency / fastest latency on the same config
    fastest_on: int
    noisy: int


#: bound_ratio histogram bins: log10 edges from 1e-6 to 1e6 in quarter decades (ratio 1 is an edge)
RATIO_EDGES = [10 ** (e / 4) for e in range(-24, 25)]


@dataclass
class Grid:
    """Configs x backends, each cell the index of its result: the HTML verdict and latency maps."""

    configs: list[str]  # labels, in matrix order
    backends: list[str]  # backend labels
    cells: list[list[int | None]]  # [config][backend] -> index into the results, None where not run


@dataclass
class RunSummary:
    run: dict | None
    total: int
    passed: int
    known: int
    new_findings: int
    verdicts: list[str]  # the verdicts that occur, in the table's order
    backends: list[BackendCounts]
    worst_drifts: list[Result]
    narrow_sums: list[NarrowSums]
    non_pass: list[Result]
    known_seen: list[Divergence]
    shape_inference: list[ShapeDisagreement]
    speed: list[Speed] = field(default_factory=list)
    slowest: list[Result] = field(default_factory=list)
    #: per backend, counts of bound_ratio in RATIO_EDGES' bins, plus zeros and values beyond the last edge
    ratio_histograms: dict[str, dict] = field(default_factory=dict)
    grid: Grid = field(default_factory=lambda: Grid([], [], []))  # summarise fills it in

    @property
    def complete(self) -> bool:
        return self.run is None or bool(self.run.get("complete"))

    def as_dict(self) -> dict:
        return asdict(self)


def is_failure(result: Result) -> bool:
    """Counts against the exit code: any non-pass that is neither skipped nor a known divergence."""
    return result.verdict != "pass" and result.verdict not in SKIPPED and not result.known_divergence


def run_record(run: Run, results: list[Result]) -> dict:
    """What a report says about the run itself: above all, whether it is complete."""
    return {
        # The store says 'running' for a live run and for one that was killed alike: data cannot tell them apart.
        "run_id": run.run_id, "matrix": run.matrix, "status": "complete" if run.complete else "unfinished", "complete": run.complete,
        "planned": run.planned, "recorded": len(results), "started_at": run.started_at, "finished_at": run.finished_at,
        "shard": run.parameters.get("shard"),  # [K, N] for one shard of a run: a part, never the whole
        "environment": run.environment,
        "kind": run.parameters.get("kind", "run"),  # a `conformance judge` run says "judge"
    }


def summarize(results: list[Result], run: Run | None, known: list[Divergence], worst: int = 5, slowest: int = 3) -> RunSummary:
    by_id = {entry.id: entry for entry in known}
    non_pass = sorted((r for r in results if r.verdict != "pass"), key=lambda r: (r.verdict, r.label, r.backend_label))
    speed, slow = _latency(results, slowest)
    return RunSummary(
        run=run_record(run, results) if run is not None else None,
        total=len(results),
        passed=sum(r.verdict == "pass" for r in results),
        known=sum(bool(r.known_divergence) for r in results),
        new_findings=sum(is_failure(r) for r in results),
        verdicts=[v for v in VERDICTS if any(r.verdict == v for r in results)],
        backends=_counts(results),
        # The reference backend's ratio only measures rounding its own float64 answer: not shown.
        worst_drifts=sorted((r for r in results if r.bound_ratio is not None and r.backend != "reference"),
                            key=lambda r: -_present(r.bound_ratio))[:worst],
        narrow_sums=_narrow_sums(results),
        non_pass=non_pass,
        known_seen=[by_id[i] for i in sorted({r.known_divergence for r in non_pass if r.known_divergence}) if i in by_id],
        shape_inference=_shape_disagreements(results, known),
        speed=speed,
        slowest=slow,
        ratio_histograms=_ratio_histograms(results),
        grid=_grid(results),
    )


def _ratio_histograms(results: Iterable[Result]) -> dict[str, dict]:
    """Where each backend's results sit under the bound: the shape of its accuracy, log scale."""
    found: dict[str, dict] = {}
    for r in results:
        if r.bound_ratio is None or r.backend == "reference":
            continue
        entry = found.setdefault(r.backend_label, {"bins": [0] * (len(RATIO_EDGES) - 1), "zero": 0, "below": 0, "above": 0})
        if r.bound_ratio == 0:
            entry["zero"] += 1
        elif r.bound_ratio < RATIO_EDGES[0]:
            entry["below"] += 1
        elif r.bound_ratio >= RATIO_EDGES[-1]:
            entry["above"] += 1
        else:
            entry["bins"][bisect.bisect_right(RATIO_EDGES, r.bound_ratio) - 1] += 1
    return found


def _grid(results: list[Result]) -> Grid:
    configs: dict[tuple[str, str], str] = {}
    backends: dict[str, None] = {}
    for r in results:
        configs.setdefault((r.config_id, r.expect), r.label)
        backends.setdefault(r.backend_label)
    rows = {key: index for index, key in enumerate(configs)}
    columns = {name: index for index, name in enumerate(backends)}
    cells: list[list[int | None]] = [[None] * len(columns) for _ in rows]
    for index, r in enumerate(results):
        cells[rows[(r.config_id, r.expect)]][columns[r.backend_label]] = index
    return Grid(list(configs.values()), list(backends), cells)


def _counts(results: Iterable[Result]) -> list[BackendCounts]:
    counts: dict[str, Counter] = defaultdict(Counter)
    known: Counter = Counter()
    for r in results:
        counts[r.backend_label][r.verdict] += 1
        known[r.backend_label] += bool(r.known_divergence)
    return [BackendCounts(backend, dict(counter), known[backend]) for backend, counter in counts.items()]


def _present(figure: float | None) -> float:
    """A figure of a result chosen for having it (the filter is out of the type checker's sight)."""
    if figure is None:
        raise ValueError("a result without the figure it was chosen for")
    return figure


def _narrow_sums(results: Iterable[Result]) -> list[NarrowSums]:
    """Worth knowing before deploying (precision lost inside the backend), but within its measured
    model, so not a conformance defect.  `float32_sum_ratio > 1`: one float32 sum could not give it."""
    groups: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in results:
        # passes only: a drift's float32_sum_ratio measures the defect, not the summation order
        if r.float32_sum_ratio is not None and r.verdict == "pass":
            groups[(r.backend_label, r.dtype)].append(r)
    found = []
    for (backend, dtype), rows in sorted(groups.items()):
        ratios = [r.float32_sum_ratio for r in rows if r.float32_sum_ratio is not None]  # every row has one: grouped on it
        beyond = [ratio for ratio in ratios if ratio > 1]
        found.append(NarrowSums(backend, dtype, rows[0].accumulation or "", len(rows), len(beyond), max(beyond, default=None)))
    return found


def _shape_disagreements(results: Iterable[Result], known: list[Divergence]) -> list[ShapeDisagreement]:
    """One row per config where ONNX shape inference predicts another shape than the spec text."""
    seen, found = set(), []
    for r in results:
        if not (r.expected_shape and r.onnx_inferred_shape) or r.config_id in seen:
            continue
        seen.add(r.config_id)
        if list(r.onnx_inferred_shape) != list(r.expected_shape):
            entry = match(known, stored_spec(r), "onnx-shape-inference", "shape-mismatch")
            found.append(ShapeDisagreement(r.label, list(r.onnx_inferred_shape), list(r.expected_shape),
                                           entry.id if entry else None, entry.upstream if entry else None))
    return found


def _latency(results: list[Result], slowest: int) -> tuple[list[Speed], list[Result]]:
    """Each backend's speed relative to the fastest on the same config, and its slowest configs."""
    timed = [r for r in results if r.latency_median_ms is not None]
    by_backend: dict[str, list[Result]] = defaultdict(list)
    by_config: dict[str, list[Result]] = defaultdict(list)
    for r in timed:
        by_backend[r.backend_label].append(r)
        by_config[r.config_id].append(r)
    ratios: dict[str, list[float]] = defaultdict(list)
    wins: Counter = Counter()
    for rows in by_config.values():
        if len(rows) < 2:
            continue
        fastest = min(_present(r.latency_median_ms) for r in rows)
        for r in rows:
            ratios[r.backend_label].append(_present(r.latency_median_ms) / fastest)
            wins[r.backend_label] += r.latency_median_ms == fastest
    speed = []
    for backend, rows in by_backend.items():
        values = ratios.get(backend)
        mean = math.exp(sum(math.log(v) for v in values) / len(values)) if values else None
        speed.append(Speed(backend, len(rows), mean, wins[backend], sum((r.latency_cv or 0) > 0.025 for r in rows)))
    slow = [r for rows in by_backend.values() for r in sorted(rows, key=lambda r: -_present(r.latency_median_ms))[:slowest]]
    return speed, slow
