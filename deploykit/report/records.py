"""The JSON report: the run (complete or not), its summary counts, and one record per result."""

from __future__ import annotations

from dataclasses import asdict
from typing import Iterable

from deploykit.results.divergences import Divergence
from deploykit.results.result import Result
from deploykit.results.summary import RunSummary

#: Keys every JSON record carries first (the documented contract); the rest follow.
JSON_KEYS = (
    "config_id", "label", "backend", "precision", "dtype", "verdict", "reason", "max_abs_err", "max_rel_err",
    "rel_l2_err", "max_ulp_err", "bound_ratio", "accumulation", "float32_sum_ratio", "expected_shape", "actual_shape",
    "onnx_inferred_shape", "known_divergence", "expect", "backend_version", "duration_ms",
    "latency_median_ms", "latency_p99_ms", "latency_cv", "latency_gpu_median_ms", "latency_gpu_p99_ms", "gflops",
    "setup_ms", "spec",
)


def to_json_records(results: Iterable[Result]) -> list[dict]:
    records = []
    for result in results:
        data = result.as_dict()
        records.append({key: data[key] for key in JSON_KEYS})
    return records


def divergence_record(entry: Divergence) -> dict:
    """An entry as the JSON report has always shown it: `repro` is the path of its committed script, or "".

    The table stores the repro's minimal case (the `repro:` block); readers of the report were promised the
    script's path, so the block stays out of the contract.
    """
    record = asdict(entry)
    record["repro"] = f"conformance/repros/{entry.id}/repro.py" if entry.repro is not None else ""
    return record


def to_json_report(summary: RunSummary, results: list[Result], known: list[Divergence]) -> dict:
    """The run, the counts a CI gate reads, the known divergences it was judged with, the records."""
    return {
        "run": summary.run,
        "counts": {"results": summary.total, "pass": summary.passed, "known": summary.known,
                   "new_findings": summary.new_findings},
        "known_divergences": [divergence_record(entry) for entry in known],
        "results": to_json_records(results),
    }
