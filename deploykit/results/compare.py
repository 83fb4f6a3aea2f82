"""`deploykit conformance compare`: what changed between a baseline run and the current one.

A runtime upgrade, a new GPU or driver, a new deploykit: CI wants to know what got worse.  Results
are matched on (config, expectation, backend, precision, dtype).  A regression is
- a verdict regression: a result that passed and now fails (a non-pass that is not a known
  divergence or documented non-support), or a failing result whose verdict changed;
- a new failing result for a config the baseline did not have;
- a latency slowdown beyond the noise of both sides: the medians differ by more than `sigmas`
  (default 3) standard deviations of the difference, each side's spread being its CV x median.
  Latency is compared only when both runs were timed on the same CPU and GPUs.
A bound_ratio that grew by more than `ratio_growth` (default 10x) to above 0.01 is reported as a
numerical change: still within the bound, so not a defect (another CPU can take another kernel
path), unless `strict_ratio` makes it a regression.  Fixes (a failure that now passes), and
configs added or missing are reported too.  Pure data; `deploykit.report.compare` lays it out.

A side that is not a whole, finished run (killed, interrupted, a merge missing a shard, one shard
of a run, a JSON report missing results) makes the comparison INCOMPLETE: results it lacks would
count as "missing", never as regressions, so a comparison of part of a run proves nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.errors import UsageError
from deploykit.results.result import Result
from deploykit.results.summary import is_failure

Key = tuple[str, str, str, str, str]  # config_id, expect, backend, precision, dtype
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class Side:
    """One side of a comparison: a run's description and its results."""

    source: str
    run: dict
    results: dict[Key, Result]


@dataclass
class Change:
    label: str
    backend: str
    before: str
    after: str
    detail: str = ""


@dataclass
class Comparison:
    baseline: str
    current: str
    matrices: tuple[str, str]
    shared: int
    added: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    regressions: list[Change] = field(default_factory=list)
    fixes: list[Change] = field(default_factory=list)
    ratio_growth: list[Change] = field(default_factory=list)
    slowdowns: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    strict_ratio: bool = False
    #: why the comparison covers only part of a run (one line per incomplete side); empty when both are whole
    incomplete: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return bool(self.regressions or self.slowdowns or (self.strict_ratio and self.ratio_growth))


def key(result: Result) -> Key:
    return result.config_id, result.expect, result.backend, result.precision, result.dtype


def load_side(path: Path, run_id: int | None = None, run_option: str = "--run") -> Side:
    """A results database (its chosen or latest run) or a JSON report from `report --format json`.

    A JSON report holds one run: a run id given for it (`run_option`) is refused, not ignored."""
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a results database or a JSON report")
    if not path.is_file():
        raise UsageError(f"{path} does not exist; give a results database or a JSON report")
    with path.open("rb") as handle:
        is_sqlite = handle.read(16) == _SQLITE_MAGIC
    if not is_sqlite and run_id is not None:
        raise UsageError(f"{run_option} {run_id}: {path} is a JSON report, which holds one run; drop {run_option}")
    return _side_from_db(path, run_id) if is_sqlite else _side_from_json(path)


def _side_from_db(path: Path, run_id: int | None) -> Side:
    from deploykit.results.store import Store
    from deploykit.results.summary import run_record

    store = Store(path, create=False)
    try:
        runs = store.runs()
        chosen = next((r for r in runs if r.run_id == run_id), None) if run_id is not None else (runs[-1] if runs else None)
        if chosen is None:
            raise UsageError(f"{path} holds no run {run_id}" if run_id is not None else f"{path} holds no runs yet")
        results = store.results(chosen.run_id)
    finally:
        store.close()
    return Side(str(path), run_record(chosen, results), {key(r): r for r in results})


def _side_from_json(path: Path) -> Side:
    from deploykit.results.baseline import read_report

    run, results = read_report(path)  # checked against the report's schema: a malformed file is a usage error
    return Side(str(path), run, {key(r): r for r in results})


def _gap(role: str, side: Side, other: Side) -> str | None:
    """Why `side` is not a whole, finished run, in one line; None when it is."""
    run = side.run
    if "complete" not in run:
        return f"the {role} {side.source} has no run record, so nothing shows that it is complete"
    what = f"the {role} run {run.get('run_id', '?')} in {side.source}"
    recorded, planned = len(side.results), run.get("planned")
    if not run["complete"]:
        return f"{what} has not finished: {recorded} of {planned} results recorded"
    if isinstance(planned, int) and recorded < planned:
        return f"{what} holds {recorded} of its {planned} results"
    shard = run.get("shard")
    if shard and shard != other.run.get("shard"):
        return f"{what} is shard {'/'.join(map(str, shard))} of a run, compared with {_whole_or_shard(other.run)}"
    return None


def _whole_or_shard(run: dict) -> str:
    shard = run.get("shard")
    return f"shard {'/'.join(map(str, shard))}" if shard else "a whole run"


def _same_machine(base: dict, current: dict) -> bool:
    left, right = base.get("environment") or {}, current.get("environment") or {}
    return bool(left) and (left.get("cpu"), left.get("gpus")) == (right.get("cpu"), right.get("gpus"))


def _slowdown(before: Result, after: Result, sigmas: float) -> str | None:
    if before.latency_median_ms is None or after.latency_median_ms is None:
        return None
    spread = math.hypot((before.latency_cv or 0) * before.latency_median_ms, (after.latency_cv or 0) * after.latency_median_ms)
    excess = after.latency_median_ms - before.latency_median_ms
    if excess <= 0 or excess <= sigmas * spread:
        return None
    return (f"median {before.latency_median_ms:.4g} -> {after.latency_median_ms:.4g} ms"
            f" ({after.latency_median_ms / before.latency_median_ms:.2f}x, {excess / spread if spread else math.inf:.1f} sigma)")


def _verdict_change(before: Result, after: Result) -> tuple[str, Change] | None:
    change = Change(after.label, after.backend_label, before.verdict, after.verdict, after.reason)
    if is_failure(after) and (before.verdict == "pass" or before.verdict != after.verdict):
        return "regression", change
    if is_failure(before) and after.verdict == "pass":
        return "fix", change
    return None


def compare(base: Side, current: Side, ratio_growth: float = 10.0, sigmas: float = 3.0, latency: bool = True,
            strict_ratio: bool = False) -> Comparison:
    shared = base.results.keys() & current.results.keys()
    result = Comparison(base.source, current.source, (base.run.get("matrix", "?"), current.run.get("matrix", "?")), len(shared),
                        strict_ratio=strict_ratio)
    result.added = sorted(f"{current.results[k].label} on {current.results[k].backend_label}" for k in current.results.keys() - shared)
    result.missing = sorted(f"{base.results[k].label} on {base.results[k].backend_label}" for k in base.results.keys() - shared)
    if result.matrices[0] != result.matrices[1] or result.added or result.missing:
        result.notes.append(f"the runs differ (matrix {result.matrices[0]} vs {result.matrices[1]}): compared on the {len(shared)} shared results")
    for k in current.results.keys() - shared:
        if is_failure(current.results[k]):
            r = current.results[k]
            result.regressions.append(Change(r.label, r.backend_label, "(not in the baseline)", r.verdict, r.reason))
    result.incomplete = [gap for gap in (_gap("baseline", base, current), _gap("current", current, base)) if gap]
    compare_latency = latency and _same_machine(base.run, current.run)
    if latency and not compare_latency:
        result.notes.append("latency not compared: the runs were timed on different machines (or not timed)")
    for k in sorted(shared):
        before, after = base.results[k], current.results[k]
        verdict = _verdict_change(before, after)
        if verdict:
            (result.regressions if verdict[0] == "regression" else result.fixes).append(verdict[1])
        elif (before.bound_ratio and after.bound_ratio and after.bound_ratio > 0.01
              and after.bound_ratio > ratio_growth * before.bound_ratio):
            result.ratio_growth.append(Change(after.label, after.backend_label, f"{before.bound_ratio:.3g}",
                                              f"{after.bound_ratio:.3g}", f"{after.bound_ratio / before.bound_ratio:.3g}x"))
        slower = _slowdown(before, after, sigmas) if compare_latency else None
        if slower:
            result.slowdowns.append(Change(after.label, after.backend_label, before.verdict, after.verdict, slower))
    return result
