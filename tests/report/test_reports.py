"""Conformance in CI: results as data, the reports (Markdown, JUnit, HTML in a real browser), the
baseline comparison, shards that merge back into one run, and the pipelines in ci/."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, assert_usage_error, deploykit

from deploykit import backends as registry
from deploykit.op.spec import ConvTransposeSpec
from deploykit.results.compare import Side, compare, key
from deploykit.results.result import Result

CPU = "reference,ort-cpu"


@pytest.fixture(scope="module")
def smoke_db(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("reports")
    proc = deploykit("conformance", "run", "--matrix", "smoke", "--backends", "reference,onnx-reference,ort-cpu",
                     "--db", "r.db", "--jobs", "2", cwd=folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return folder / "r.db"


def _report(db: Path, format_: str, out: Path) -> Path:
    proc = deploykit("conformance", "report", "--db", str(db), "--format", format_, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


# ----- results as data and the simple formats -----------------------------------------------------
@pytest.mark.slow
def test_summary_counts_agree_with_the_records(smoke_db, tmp_path):
    report = json.loads(_report(smoke_db, "json", tmp_path / "r.json").read_text())
    records = report["results"]
    assert report["counts"] == {"results": len(records), "pass": sum(r["verdict"] == "pass" for r in records),
                                "known": sum(bool(r["known_divergence"]) for r in records), "new_findings": 0}
    assert report["run"]["complete"] and report["run"]["environment"]["packages"]["onnxruntime"]
    assert {entry["id"] for entry in report["known_divergences"]} >= {"ort-output-padding-ge-stride"}


@pytest.mark.slow
def test_junit_is_one_testcase_per_result_that_a_junit_reader_accepts(smoke_db, tmp_path):
    junitparser = pytest.importorskip("junitparser")
    xml = junitparser.JUnitXml.fromfile(str(_report(smoke_db, "junit", tmp_path / "r.xml")))
    [suite] = list(xml)
    cases = list(suite)
    assert len(cases) == suite.tests == 93
    skipped = [c for c in cases if c.result and isinstance(c.result[0], junitparser.Skipped)]
    failed = [c for c in cases if c.result and isinstance(c.result[0], junitparser.Failure)]
    assert suite.failures == len(failed) == 0 and suite.skipped == len(skipped) > 0
    known = next(c for c in skipped if c.name == "2d-op-below-dilation-only" and c.classname == "deploykit.ort-cpu.fp32")
    assert "known divergence ort-output-padding-ge-stride" in known.result[0].message


@pytest.mark.slow
def test_junit_marks_a_new_finding_as_a_failure(tmp_path, fault_backends):
    proc = deploykit("conformance", "run", "--matrix", "smoke", "--backends", "drifty", "--dtypes", "float32",
                     "--db", "d.db", cwd=tmp_path)
    assert proc.returncode == 1
    junitparser = pytest.importorskip("junitparser")
    [suite] = list(junitparser.JUnitXml.fromfile(str(_report(tmp_path / "d.db", "junit", tmp_path / "d.xml"))))
    assert suite.failures > 20
    failure = next(c for c in suite if c.result and isinstance(c.result[0], junitparser.Failure))
    assert failure.result[0].type == "drift" and "rounding-error bound" in failure.result[0].message


@pytest.mark.slow
def test_a_report_uses_the_divergence_table_its_run_was_judged_with(tmp_path):
    """Editing the YAML later must not change the report of an old run."""
    shutil.copytree(ROOT / "conformance", tmp_path / "data", ignore=shutil.ignore_patterns("pytest_route", "repros"))
    env = {"DEPLOYKIT_CONFORMANCE_DIR": str(tmp_path / "data")}
    run = deploykit("conformance", "run", "--matrix", "smoke", "--backends", "ort-cpu", "--db", "r.db", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    table = yaml.safe_load((tmp_path / "data" / "known_divergences.yaml").read_text())
    (tmp_path / "data" / "known_divergences.yaml").write_text(yaml.safe_dump([e for e in table if not e["id"].startswith("ort-")]))
    report = deploykit("conformance", "report", "--db", "r.db", "--format", "md", cwd=tmp_path, env=env)
    assert "✅ 0 new finding(s)" in report.stdout and "`ort-output-padding-ge-stride`" in report.stdout


# ----- HTML in a real browser ------------------------------------------------------------------------
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-ci.txt has it)")
    executable = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if executable is None:
        pytest.skip("no Chromium to drive: install Debian's chromium (.ci/run does)")
    return playwright.sync_playwright, executable


@pytest.mark.slow
def test_html_report_opens_in_chromium_with_one_map_cell_per_result(smoke_db, tmp_path):
    sync_playwright, executable = _browser()
    page_path = _report(smoke_db, "html", tmp_path / "r.html")
    assert "http" not in re.sub(r"https?://github\.com/\S+", "", page_path.read_text())  # nothing fetched
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        errors, requests = [], []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        assert errors == []
        assert requests == [page_path.as_uri()]  # self-contained: no script, style or font fetched
        assert page.locator("#map td.c").count() == 93
        assert "Complete" in page.locator("#status").text_content()
        page.locator("#map td.c.v-known").first.click()
        assert "known divergence" in page.locator("#detail").text_content()
        rows = page.locator("#nonpass tbody tr")
        page.fill("#filter", "ort-output-padding")
        visible = [rows.nth(i).is_visible() for i in range(rows.count())]
        assert 0 < sum(visible) < len(visible)
        assert page.locator("svg.hist").count() == 2  # onnx-reference and ort-cpu (the reference is not shown)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.slow
def test_html_says_when_a_run_is_incomplete(smoke_db, tmp_path):
    db = tmp_path / "partial.db"
    shutil.copy(smoke_db, db)
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE runs SET status='running'")
        connection.execute("DELETE FROM results WHERE rowid IN (SELECT rowid FROM results LIMIT 10)")
    connection.close()
    page = _report(db, "html", tmp_path / "p.html").read_text()
    assert "INCOMPLETE: run 1 recorded 83 of 93 results" in page


# ----- baselines ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_compare_a_run_with_itself_and_with_a_regression(smoke_db, tmp_path):
    same = deploykit("conformance", "compare", "--baseline", str(smoke_db), "--db", str(smoke_db))
    assert same.returncode == 0 and "no regression" in same.stdout, same.stdout + same.stderr
    baseline = _report(smoke_db, "json", tmp_path / "base.json")
    worse = tmp_path / "worse.db"
    shutil.copy(smoke_db, worse)
    with sqlite3.connect(worse) as connection:
        connection.execute("UPDATE results SET verdict='drift', reason='injected' WHERE label='2d-dcgan-k4s2p1' AND backend='ort-cpu'")
    connection.close()
    proc = deploykit("conformance", "compare", "--baseline", str(baseline), "--db", str(worse), "--json", str(tmp_path / "c.json"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2d-dcgan-k4s2p1" in proc.stdout and "REGRESSED" in proc.stdout
    [regression] = json.loads((tmp_path / "c.json").read_text())["regressions"]
    assert (regression["label"], regression["before"], regression["after"]) == ("2d-dcgan-k4s2p1", "pass", "drift")


def _result(label: str, **fields) -> Result:
    spec = ConvTransposeSpec((1, 2, ord(label[0]) - 90), 2, (3,), name=label)  # one config per label
    return replace(Result.for_spec(spec, "ort-cpu"), **fields)


def _side(results: list[Result], matrix: str = "m", cpu: str = "x") -> Side:
    return Side("s", {"matrix": matrix, "environment": {"cpu": cpu, "gpus": []}}, {key(r): r for r in results})


def test_latency_slowdowns_are_judged_against_both_sides_spread():
    before = _result("a", latency_median_ms=1.0, latency_cv=0.02)
    noisy = _result("a", latency_median_ms=1.05, latency_cv=0.02)  # 1.8 sigma: noise
    slower = _result("a", latency_median_ms=1.3, latency_cv=0.02)   # 10 sigma
    assert compare(_side([before]), _side([noisy])).slowdowns == []
    assert len(compare(_side([before]), _side([slower])).slowdowns) == 1
    assert compare(_side([before]), _side([slower])).regressed
    other_machine = compare(_side([before]), _side([slower], cpu="y"))
    assert other_machine.slowdowns == [] and "different machines" in other_machine.notes[0]


def test_bound_ratio_growth_is_reported_and_strictly_a_regression():
    grown = compare(_side([_result("a", bound_ratio=0.01)]), _side([_result("a", bound_ratio=0.5)]))
    assert len(grown.ratio_growth) == 1 and not grown.regressed
    assert compare(_side([_result("a", bound_ratio=0.01)]), _side([_result("a", bound_ratio=0.5)]), strict_ratio=True).regressed


def test_a_baseline_of_another_matrix_is_compared_on_the_intersection():
    base = _side([_result("a"), _result("b")], matrix="default")
    current = _side([_result("a"), _result("c", verdict="drift", reason="new")], matrix="smoke")
    comparison = compare(base, current)
    assert comparison.shared == 1 and comparison.missing and comparison.added
    assert "compared on the 1 shared results" in comparison.notes[0]
    assert [c.after for c in comparison.regressions] == ["drift"]  # a new config that fails is a regression


@pytest.mark.slow
def test_the_shipped_baseline_matches_a_fresh_smoke_run(tmp_path, request):
    baseline = ROOT / "conformance" / "baselines" / "smoke-cpu.json"
    backends = sorted({r["backend"] for r in json.loads(baseline.read_text())["results"]})
    if sorted(registry.default_backends()[0]) == backends:  # the default smoke run is this run: made once (conftest)
        folder, run = request.getfixturevalue("smoke_run")
        db = folder / "r.db"
    else:
        run = deploykit("conformance", "run", "--matrix", "smoke", "--backends", ",".join(backends), "--db", "r.db",
                        "--jobs", "2", cwd=tmp_path)
        db = tmp_path / "r.db"
    assert run.returncode == 0, run.stdout + run.stderr
    proc = deploykit("conformance", "compare", "--baseline", str(baseline), "--db", str(db), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----- shards ------------------------------------------------------------------------------------------
def _run(*args, cwd):
    proc = deploykit("conformance", "run", *args, "--jobs", "2", cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _keys(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT config_id, expect, backend, precision, verdict FROM results").fetchall()
    connection.close()
    return rows


@pytest.mark.slow
def test_shards_mix_the_backends():
    """Six backends in three shards: dealing sorted keys in turn gave each shard two fixed backends,
    so the shard with the slow one was the slowest. Each shard must hold every backend, about evenly."""
    from collections import Counter

    from deploykit.conformance.matrix import load as load_matrix
    from deploykit.conformance.run import _tasks

    backends = ["reference", "onnx-reference", "ort-cpu", "torch-cpu", "openvino-cpu", "tract-cpu"]
    tasks = _tasks(load_matrix("default"), backends, ["fp32"])
    shards = [_tasks(load_matrix("default"), backends, ["fp32"], (k, 3)) for k in (1, 2, 3)]
    assert sorted(t.key for shard in shards for t in shard) == sorted(t.key for t in tasks)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    for shard in shards:
        per_backend = Counter(task.backend for task in shard)
        assert set(per_backend) == set(backends)
        assert all(abs(n - len(tasks) / 18) < 0.15 * len(tasks) / 18 for n in per_backend.values()), per_backend


@pytest.mark.slow
def test_three_shards_merge_into_the_unsharded_run(tmp_path):
    for k in (1, 2, 3):
        _run("--matrix", "default", "--backends", CPU, "--shard", f"{k}/3", "--db", f"s{k}.db", cwd=tmp_path)
    sizes = [len(_keys(tmp_path / f"s{k}.db")) for k in (1, 2, 3)]
    assert max(sizes) - min(sizes) <= 1  # balanced
    _run("--matrix", "default", "--backends", CPU, "--db", "all.db", cwd=tmp_path)
    merged = deploykit("conformance", "merge", "s1.db", "s2.db", "s3.db", "-o", "m.db", cwd=tmp_path)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    whole, union = _keys(tmp_path / "all.db"), _keys(tmp_path / "m.db")
    assert len(union) == len(set(union)) == len(whole) == sum(sizes) == 896
    assert sorted(union) == sorted(whole)  # same keys and verdicts, none duplicated, none lost
    report = json.loads(deploykit("conformance", "report", "--db", "m.db", "--format", "json", cwd=tmp_path).stdout)
    assert report["run"]["complete"] and report["run"]["planned"] == 896
    # A missing shard is named; the merged run is incomplete and --resume finishes it.
    partial = deploykit("conformance", "merge", "s1.db", "s3.db", "-o", "p.db", cwd=tmp_path)
    assert_usage_error(partial, "missing shard 2/3")
    _run("--resume", "--db", "p.db", cwd=tmp_path)
    assert sorted(_keys(tmp_path / "p.db")) == sorted(whole)


@pytest.mark.slow
def test_merge_refuses_shards_of_different_runs(tmp_path):
    _run("--matrix", "smoke", "--backends", "reference", "--shard", "1/2", "--db", "a.db", cwd=tmp_path)
    _run("--matrix", "smoke", "--backends", "reference", "--dtypes", "float16", "--shard", "2/2", "--db", "b.db", cwd=tmp_path)
    _run("--matrix", "smoke", "--backends", "reference", "--shard", "1/2", "--db", "c.db", cwd=tmp_path)
    assert_usage_error(deploykit("conformance", "merge", "a.db", "b.db", "-o", "m.db", cwd=tmp_path), "not shards of one run")
    assert_usage_error(deploykit("conformance", "merge", "a.db", "c.db", "-o", "m.db", cwd=tmp_path), "shard 1/2 is given twice")
    assert_usage_error(deploykit("conformance", "run", "--shard", "4/3", "--db", "x.db", cwd=tmp_path), "--shard '4/3'")
    assert not (tmp_path / "m.db").exists()


@pytest.mark.slow
def test_the_pytest_route_runs_under_xdist_and_writes_junit(tmp_path):
    pytest.importorskip("xdist")
    junit = tmp_path / "route.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider",
                           str(ROOT / "conformance"), f"--junitxml={junit}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "DEPLOYKIT_BACKENDS_UNDER_TEST": "reference,ort-cpu"})
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert re.search(r'tests="62"', junit.read_text())


# ----- the pipelines -------------------------------------------------------------------------------------
def _commands(pipeline: Path) -> list[str]:
    """Every `deploykit ...` command a pipeline file runs."""
    found = []
    for line in pipeline.read_text().splitlines():
        match = re.search(r"deploykit (conformance \w+|\w+)( .*)?$", line)
        if match and not line.lstrip().startswith("#"):
            found.append(match.group(0).split(">>")[0].strip())
    return found


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["github-actions.yml", "gitlab-ci.yml"])
def test_every_deploykit_command_in_the_pipelines_exists_with_its_options(pipeline):
    path = ROOT / "ci" / pipeline
    assert isinstance(yaml.safe_load(path.read_text()), dict)
    commands = _commands(path)
    assert len(commands) >= 6
    helps: dict[str, str] = {}
    for command in commands:
        words = command.split()[1:]
        sub = words[:2] if words[0] == "conformance" else words[:1]
        text = helps.setdefault(" ".join(sub), deploykit(*sub, "--help").stdout)
        for option in (w for w in words if w.startswith("--")):
            assert f"{option} " in text or f"{option}\n" in text or f"{option}," in text, f"{pipeline}: {command}: {option}"


def test_narrow_sum_evidence_comes_from_passing_results_only():
    """A drift's float32_sum_ratio measures the defect, not how the backend sums: it is no evidence."""
    from deploykit.op.spec import ConvTransposeSpec
    from deploykit.results.result import Result
    from deploykit.results.summary import summarize

    spec = ConvTransposeSpec(input_shape=(1, 1, 4), out_channels=1, kernel_shape=(3,), dtype="float16")
    healthy = Result.for_spec(spec, "torch-cpu", "pass")
    healthy.float32_sum_ratio, healthy.accumulation = 1.5, "taps in float16"
    broken = Result.for_spec(spec, "torch-cpu", "drift", precision="fp16")
    broken.float32_sum_ratio, broken.accumulation = 500.0, "taps in float16"
    [narrow] = summarize([healthy, broken], None, []).narrow_sums
    assert (narrow.results, narrow.beyond_float32, narrow.worst) == (1, 1, 1.5)
