"""`deploykit conformance fuzz`: Hypothesis search and shrinking, failure classes, stored runs."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import find, given, settings
from rich.console import Console

from deploykit.fuzz.classes import class_of, group, signature, size_key
from deploykit.fuzz.search import FuzzRequest, _settings, fuzz
from deploykit.fuzz.strategies import specs, valid_specs
from deploykit.op.spec import DTYPES, ConvTransposeSpec
from deploykit.report.fuzz import minimal_config
from deploykit.results.result import Result
from deploykit.results.store import Store

SPEC = ConvTransposeSpec(input_shape=(1, 1, 4), out_channels=1, kernel_shape=(3,))


def _result(verdict: str, reason: str = "", backend: str = "ort-cpu", **fields) -> Result:
    result = Result.for_spec(SPEC, backend, verdict, reason)
    for name, value in fields.items():
        setattr(result, name, value)
    return result


# ----- failure classes ------------------------------------------------------------------------
def test_signature_drops_numbers_lists_and_generated_names():
    one = _result("rejected", "Node ConvTranspose_0123456789ab: X.shape=(1, 2, 3) pads=[[0 0] [1 1]] got np.int64(4), 1e-3")
    two = _result("rejected", "Node ConvTranspose_ba9876543210: X.shape=(5, 6) pads=[[2 2]] got np.int64(7), 2.5e+1")
    assert signature(one) == signature(two) == "Node <name>: X.shape=[..] pads=[..] got N, N"
    assert signature(_result("rejected", "output_padding too large")) != signature(one)


def test_accepted_invalid_signature_names_the_rules_broken_once_each():
    broken = _result("accepted-invalid", "ran it (output [1, 1, 3]) although output_padding[0]=2 is not below "
                     "max(stride=1, dilation=1)=1; output_padding[1]=3 is not below max(stride=2, dilation=1)=2")
    other = _result("accepted-invalid", "ran it (output [1, 1]) although pads [1, 1] must not be set together with auto_pad=VALID")
    assert signature(broken) == "ran a model with output_padding[..]=N is not below max[..]=N"
    assert "auto_pad=.." in signature(other) and signature(other) != signature(broken)


def test_shape_signature_says_which_way_the_shape_is_wrong():
    smaller = _result("shape-mismatch", expected_shape=[1, 1, 4], actual_shape=[1, 1, 3])
    larger = _result("shape-mismatch", expected_shape=[1, 1, 4, 4], actual_shape=[1, 1, 5, 4])
    assert "smaller" in signature(smaller) and "larger" in signature(larger)
    assert signature(smaller) != signature(larger)


def test_passes_and_skips_have_no_class_and_known_ids_split_classes():
    assert class_of(_result("pass")) is None and class_of(_result("unsupported", "no kernel")) is None
    known = _result("rejected", "boom", known_divergence="ort-output-padding-ge-stride")
    assert class_of(known) != class_of(_result("rejected", "boom"))


def test_group_counts_and_keeps_the_smallest_config():
    small = ConvTransposeSpec(input_shape=(1, 1, 2), out_channels=1, kernel_shape=(1,))
    big = ConvTransposeSpec(input_shape=(1, 3, 2, 2), out_channels=2, kernel_shape=(2, 2))
    results = [Result.for_spec(spec, "ort-cpu", "rejected", "same message 7") for spec in (big, small, big)]
    [found] = group(results)
    assert found.count == 3 and found.minimal.config_id == small.id
    assert size_key(small.to_dict()) < size_key(big.to_dict())


def test_class_line_shows_the_auto_pad_an_output_shape_label_hides():
    """SAME_UPPER and SAME_LOWER beside output_shape share a label: the line must tell them apart."""
    lines = {minimal_config(ConvTransposeSpec(input_shape=(1, 1, 1), out_channels=1, kernel_shape=(1,), output_shape=(1,),
                                              auto_pad=auto_pad).to_dict()) for auto_pad in ("SAME_UPPER", "SAME_LOWER")}
    assert len(lines) == 2 and all("auto_pad=SAME_" in line for line in lines)


# ----- the search space -----------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=150, deadline=None, database=None)
@given(specs(DTYPES))
def test_every_drawn_config_is_valid_or_marked_invalid(spec: ConvTransposeSpec):
    assert spec.is_valid == (spec.expect == "accept")
    assert all(size >= 1 for size in spec.output_spatial) or spec.expect == "reject"
    if spec.expect == "reject":
        assert all(size >= 0 for size in spec.output_spatial) or any("below 1" in v for v in spec.violations())
        assert not any(size == 0 for size in spec.output_spatial)  # zero-size outputs are never generated


def test_shrinking_drops_any_axis_not_only_the_last():
    """A failure that needs a stride of 3 on some axis shrinks to one axis: the shrinker can turn
    off the first axis of two (a plain list of axes left it at rank 2)."""
    found = find(valid_specs(["float32"]), lambda s: s.rank >= 2 and s.strides[1] >= 3 or s.rank == 1 and s.strides[0] >= 3,
                 settings=_settings(500, shrink=True), random=random.Random(0))
    assert found.rank == 1 and found.strides == (3,) and found.in_channels == 1 and found.in_spatial == (1,)


# ----- the search, end to end -----------------------------------------------------------------
def _fuzz(tmp_path: Path, backends: list[str], examples: int, seed: int = 1, name: str = "fuzz.db"):
    request = FuzzRequest(backends=backends, seed=seed, max_examples=examples, db=tmp_path / name, jobs=2)
    return fuzz(request, Console(file=open("/dev/null", "w")))


@pytest.mark.slow
def test_refinds_the_known_ort_and_onnx_reference_classes_shrunk(tmp_path):
    outcome = _fuzz(tmp_path, ["ort-cpu", "onnx-reference"], examples=40)
    wanted = {"ort-output-padding-ge-stride": "ort-cpu", "onnx-reference-grouped": "onnx-reference"}
    for known, backend in wanted.items():
        minimal = [c for c in outcome.classes if c.key.known_divergence == known and c.key in outcome.shrunk]
        assert minimal, f"{known} not re-found and shrunk"
        spec = min((c.minimal_spec for c in minimal), key=lambda s: size_key(s.to_dict()))
        assert spec.rank <= 2 and max(spec.in_channels, spec.out_channels) <= 4 and max(spec.in_spatial) <= 8, spec
        assert all(c.key.backend == backend for c in minimal)
    stored = Store(tmp_path / "fuzz.db", create=False)
    try:
        run = stored.latest_run()
        assert run.complete and run.parameters["kind"] == "fuzz" and run.planned == len(stored.results(run.run_id))
    finally:
        stored.close()


@pytest.mark.slow
def test_same_seed_same_classes_and_a_finished_run_resumes_from_its_results(tmp_path):
    first = _fuzz(tmp_path, ["onnx-reference"], examples=15, name="a.db")
    second = _fuzz(tmp_path, ["onnx-reference"], examples=15, name="b.db")
    summary = lambda outcome: sorted((c.key, c.minimal.config_id, c.count) for c in outcome.classes)  # noqa: E731
    assert summary(first) == summary(second) and first.classes
    with sqlite3.connect(tmp_path / "a.db") as db:  # as if the process had died before the end
        db.execute("UPDATE runs SET status='running', finished_at=NULL, owner=NULL")
    request = FuzzRequest(backends=["onnx-reference"], db=tmp_path / "a.db", resume=True)
    resumed = fuzz(request, Console(file=open("/dev/null", "w")))
    assert summary(resumed) == summary(first) and len(resumed.results) == len(first.results)


@pytest.mark.slow
def test_a_spent_budget_ends_the_search_and_still_finishes_the_run(tmp_path):
    """--budget alone (no --max-examples) stops the search and leaves a complete run, every result stored."""
    request = FuzzRequest(backends=["onnx-reference"], budget=0.2, db=tmp_path / "b.db")
    outcome = fuzz(request, Console(file=open("/dev/null", "w")))
    assert outcome.cut_short[0] == "explore" and outcome.explored < 1000
    assert outcome.run.complete and outcome.run.planned == len(outcome.results)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploykit", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_prints_one_line_per_class_writes_json_and_exits_1_on_new(tmp_path):
    done = _cli("conformance", "fuzz", "--backends", "onnx-reference", "--max-examples", "15", "--seed", "1",
                "--db", "f.db", "--json", "classes.json", cwd=tmp_path)
    classes = json.loads((tmp_path / "classes.json").read_text())
    assert done.returncode == (1 if any(c["known_divergence"] is None for c in classes) else 0), done.stderr
    lines = [line for line in done.stdout.splitlines() if "  onnx-reference  " in line]
    assert len(lines) == len(classes) > 0
    assert set(classes[0]) >= {"backend", "verdict", "known_divergence", "signature", "count", "minimal_spec", "config_id"}
    ConvTransposeSpec.from_dict(classes[0]["minimal_spec"])  # a spec, as a dict
    report = _cli("conformance", "report", "--db", "f.db", cwd=tmp_path)  # a fuzz run reports like any other
    assert report.returncode in (0, 1) and "results" in report.stdout


@pytest.mark.slow
def test_cli_exits_1_and_says_new_for_a_class_no_entry_explains(tmp_path):
    """The same search with onnx.reference's entries taken out of the table: its classes are NEW."""
    import yaml

    from deploykit.paths import KNOWN_DIVERGENCES

    table = [entry for entry in yaml.safe_load(KNOWN_DIVERGENCES.read_text()) if "onnx-reference" not in entry["backends"]]
    (tmp_path / "table").mkdir()
    (tmp_path / "table" / "known_divergences.yaml").write_text(yaml.safe_dump(table))
    done = subprocess.run([sys.executable, "-m", "deploykit", "conformance", "fuzz", "--backends", "onnx-reference",
                           "--max-examples", "15", "--seed", "1", "--db", "f.db", "--json", "classes.json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DEPLOYKIT_CONFORMANCE_DIR": str(tmp_path / "table")})
    classes = json.loads((tmp_path / "classes.json").read_text())
    assert done.returncode == 1, done.stderr
    assert classes and all(c["known_divergence"] is None for c in classes)
    assert sum(line.startswith("NEW") for line in done.stdout.splitlines()) == len(classes), done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (("--dtypes", "float8"), "unknown dtype"),
    (("--resume",), "nothing to resume"),
    (("--backends", "nonesuch"), "unknown backend"),
])
def test_cli_usage_errors(tmp_path, args, message):
    done = _cli("conformance", "fuzz", "--max-examples", "5", "--db", "f.db", *args, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_matrix_resume_refuses_a_fuzz_run(tmp_path):
    store = Store(tmp_path / "f.db")
    store.start_run("fuzz", {"kind": "fuzz", "backends": ["onnx-reference"]}, {}, 0, None)
    store.close()
    done = _cli("conformance", "run", "--resume", "--db", "f.db", cwd=tmp_path)
    assert done.returncode == 2 and "is a fuzz run" in done.stderr
