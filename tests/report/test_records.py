"""The JSON report's records: the contract CI gates and dashboards read."""

from __future__ import annotations

import json
from dataclasses import fields

from helpers import ROOT

from deploykit.report.records import divergence_record
from deploykit.results.divergences import Divergence, load


def test_a_known_divergence_shows_its_repro_as_the_path_of_its_script():
    """The table stores a repro's minimal case; the report has always given the script's path, or ""."""
    table = load()
    records = {entry.id: divergence_record(entry) for entry in table}
    for entry in table:
        repro = records[entry.id]["repro"]
        if entry.repro is None:
            assert repro == ""
        else:
            assert repro == f"conformance/repros/{entry.id}/repro.py" and (ROOT / repro).is_file()
    assert sum(bool(record["repro"]) for record in records.values()) >= 35


def test_a_divergence_record_keeps_the_keys_the_baseline_was_written_with():
    baseline = json.loads((ROOT / "conformance" / "baselines" / "smoke-cpu.json").read_text())
    keys = set(baseline["known_divergences"][0])
    assert keys <= {field.name for field in fields(Divergence)}
    record = json.loads(json.dumps(divergence_record(load()[0])))
    old = baseline["known_divergences"][0]
    assert keys <= set(record) and all(type(record[key]) is type(old[key]) for key in keys)
