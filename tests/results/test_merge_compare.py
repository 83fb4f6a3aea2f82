"""Nothing lost, nothing misreported: `merge` is atomic and never replaces a file, `compare` says
INCOMPLETE (exit 2) for part of a run, and the same backends in another order are the same run."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, assert_usage_error, deploykit

from deploykit.errors import UsageError

BACKENDS = "reference,onnx-reference"
WHOLE = 62  # the smoke matrix's 31 configs on two backends


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Two shards of one smoke run and their merge, in a folder each test copies what it needs from."""
    folder = tmp_path_factory.mktemp("shards")
    for k in (1, 2):
        proc = deploykit("conformance", "run", "--matrix", "smoke", "--backends", BACKENDS, "--shard", f"{k}/2",
                         "--db", f"s{k}.db", cwd=folder)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = deploykit("conformance", "merge", "s1.db", "s2.db", "-o", "whole.db", cwd=folder)
    assert merged.returncode == 0, merged.stderr
    return folder


def _keys(db: Path) -> set[tuple]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT config_id, expect, backend, precision, verdict FROM results").fetchall()
    connection.close()
    return set(rows)


def _copy_shards(shards: Path, tmp_path: Path) -> None:
    for name in ("s1.db", "s2.db", "whole.db"):
        shutil.copy(shards / name, tmp_path / name)


# ----- merge: whole or nothing --------------------------------------------------------------------------------
#: `conformance merge` with every result written 50 ms late: long enough to be killed in the middle
SLOW_MERGE = """
import sys, time
from pathlib import Path
import deploykit.results.store as store
original = store.Store.add
def slow_add(self, run_id, result):
    Path(sys.argv[1]).touch()  # the merge is writing results now
    time.sleep(0.05)
    original(self, run_id, result)
store.Store.add = slow_add
from deploykit.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _merge_killed_midway(tmp_path: Path, signum: int) -> subprocess.CompletedProcess:
    marker = tmp_path / "writing"
    command = [sys.executable, "-c", SLOW_MERGE, str(marker), "conformance", "merge", "s1.db", "s2.db", "-o", "m.db"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # about 10 of the 62 results written
    assert proc.poll() is None, "the merge ended before it could be killed"
    os.kill(proc.pid, signum)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["SIGKILL", "SIGTERM", "SIGINT"])
def test_a_killed_merge_leaves_no_output_and_the_next_merge_works(shards, tmp_path, signum):
    _copy_shards(shards, tmp_path)
    killed = _merge_killed_midway(tmp_path, signum)
    assert not (tmp_path / "m.db").exists(), "a killed merge left a partial -o"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.db.")]
    if signum == signal.SIGKILL:
        assert killed.returncode == -signal.SIGKILL
        assert leftovers and all(".merging" in name for name in leftovers)  # hidden, and never read as a result
    else:
        assert killed.returncode == 130 and leftovers == []
        assert "Traceback" not in killed.stderr and killed.stderr.strip().splitlines() == [
            "deploykit: error: interrupted; -o m.db was not created"]
    again = deploykit("conformance", "merge", "s1.db", "s2.db", "-o", "m.db", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.db.")]  # what SIGKILL left is cleaned up
    assert _keys(tmp_path / "m.db") == _keys(tmp_path / "s1.db") | _keys(tmp_path / "s2.db") and len(_keys(tmp_path / "m.db")) == WHOLE
    report = json.loads(deploykit("conformance", "report", "--db", "m.db", "--format", "json", cwd=tmp_path).stdout)
    assert report["run"]["complete"] and report["run"]["recorded"] == report["run"]["planned"] == WHOLE


@pytest.mark.slow
def test_a_merge_out_of_disk_leaves_no_output_and_names_o(shards, tmp_path):
    _copy_shards(shards, tmp_path)
    limit = 48 * 1024  # room for the schema, not for 62 results

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "deploykit", "conformance", "merge", "s1.db", "s2.db", "-o", "m.db"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, preexec_fn=small_files, timeout=120)
    assert_usage_error(proc, "-o m.db: cannot write the merged database", "m.db was not created")
    assert "--db" not in proc.stderr
    assert not (tmp_path / "m.db").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".m.db.")]


@pytest.mark.slow
def test_merge_never_replaces_an_existing_file_and_names_o(shards, tmp_path):
    _copy_shards(shards, tmp_path)
    (tmp_path / "mine.db").write_text("the user's own file")
    (tmp_path / "dangling.db").symlink_to(tmp_path / "nowhere")
    for target in ("mine.db", "dangling.db"):
        assert_usage_error(deploykit("conformance", "merge", "s1.db", "s2.db", "-o", target, cwd=tmp_path), f"-o {target} exists")
    assert (tmp_path / "mine.db").read_text() == "the user's own file" and (tmp_path / "dangling.db").is_symlink()
    proc = deploykit("conformance", "merge", "s1.db", "s2.db", "-o", "no/m.db", cwd=tmp_path)
    assert_usage_error(proc, "-o no/m.db: folder no does not exist")
    assert "--db" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.db", "mine.db", "s1.db", "s2.db", "whole.db"]


def test_a_file_that_appears_during_the_merge_is_kept(tmp_path):
    from deploykit.results.merge import _publish

    staging, output = tmp_path / ".m.db.1.merging", tmp_path / "m.db"
    staging.write_text("merged")
    output.write_text("appeared meanwhile")
    with pytest.raises(UsageError, match="appeared while merging"):
        _publish(staging, output)
    assert output.read_text() == "appeared meanwhile"


# ----- backends in another order ------------------------------------------------------------------------------
def _set_backends(db: Path, backends: list[str]) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE runs SET parameters = json_set(parameters, '$.backends', json(?))", (json.dumps(backends),))
    connection.close()


@pytest.mark.slow
def test_merge_takes_the_same_backends_in_another_order_and_refuses_another_set(shards, tmp_path):
    _copy_shards(shards, tmp_path)
    _set_backends(tmp_path / "s2.db", ["onnx-reference", "reference"])  # `--backends onnx-reference,reference`
    merged = deploykit("conformance", "merge", "s1.db", "s2.db", "-o", "m.db", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    assert _keys(tmp_path / "m.db") == _keys(tmp_path / "whole.db")
    _set_backends(tmp_path / "s2.db", ["reference"])
    assert_usage_error(deploykit("conformance", "merge", "s1.db", "s2.db", "-o", "n.db", cwd=tmp_path), "backends differ")


@pytest.mark.slow
def test_fuzz_resume_takes_the_same_backends_in_another_order(tmp_path):
    from deploykit.fuzz.search import FuzzRequest, _resumed
    from deploykit.results.store import Store

    db = tmp_path / "f.db"
    store = Store(db)
    store.start_run("fuzz", {"kind": "fuzz", "backends": ["reference", "onnx-reference"], "dtypes": ["float32"], "seed": 0,
                             "max_examples": 3, "budget": None, "timeout": None, "jobs": 1}, {}, 0)
    store.close()
    request = FuzzRequest(backends=["onnx-reference", "reference"], db=db, resume=True, explicit={"backends"})
    opened, run, resumed = _resumed(request)
    opened.close()
    assert resumed.backends == ["reference", "onnx-reference"]  # the run as it started
    with pytest.raises(UsageError, match="--backends"):
        _resumed(FuzzRequest(backends=["reference"], db=db, resume=True, explicit={"backends"}))


def test_run_resume_takes_the_same_backends_in_another_order():
    from deploykit.conformance.run import RunRequest, _check_resume_options

    stored = {"backends": ["reference", "ort-cpu"], "precisions": ["fp32", "fp16"]}
    _check_resume_options(RunRequest("smoke", ["ort-cpu", "reference"], precisions=["fp16", "fp32"],
                                     explicit={"backends", "precisions"}), stored)
    with pytest.raises(UsageError, match="--backends"):
        _check_resume_options(RunRequest("smoke", ["ort-cpu"], explicit={"backends"}), stored)


# ----- compare: part of a run is no verdict -------------------------------------------------------------------
def _unfinished(source: Path, target: Path, drop: int = 10) -> Path:
    shutil.copy(source, target)
    with sqlite3.connect(target) as connection:
        connection.execute("UPDATE runs SET status='running', finished_at=NULL")
        connection.execute("DELETE FROM results WHERE rowid IN (SELECT rowid FROM results LIMIT ?)", (drop,))
    connection.close()
    return target


def _assert_incomplete(proc, *needles: str) -> None:
    assert_usage_error(proc, "the comparison is INCOMPLETE", *needles)
    assert "INCOMPLETE" in proc.stdout and "no regression" not in proc.stdout


@pytest.mark.slow
def test_compare_of_an_unfinished_run_is_incomplete_on_either_side(shards, tmp_path):
    whole = shards / "whole.db"
    killed = _unfinished(whole, tmp_path / "killed.db")
    proc = deploykit("conformance", "compare", "--baseline", str(whole), "--db", str(killed), "--json", str(tmp_path / "c.json"))
    _assert_incomplete(proc, "current run 1", "has not finished: 52 of 62 results recorded")
    written = json.loads((tmp_path / "c.json").read_text())
    assert written["complete"] is False and written["regressed"] is False and len(written["incomplete"]) == 1
    _assert_incomplete(deploykit("conformance", "compare", "--baseline", str(killed), "--db", str(whole)), "baseline run 1")
    md = deploykit("conformance", "compare", "--baseline", str(whole), "--db", str(killed), "--format", "md")
    assert md.returncode == 2 and "⚠️ INCOMPLETE" in md.stdout and "**INCOMPLETE: the current run 1" in md.stdout
    same = deploykit("conformance", "compare", "--baseline", str(whole), "--db", str(whole))
    assert same.returncode == 0 and "no regression" in same.stdout, same.stderr


@pytest.mark.slow
def test_compare_of_one_shard_or_a_merge_missing_a_shard_is_incomplete(shards, tmp_path):
    whole = shards / "whole.db"
    _assert_incomplete(deploykit("conformance", "compare", "--baseline", str(whole), "--db", str(shards / "s1.db")),
                       "is shard 1/2 of a run, compared with a whole run")
    partial = deploykit("conformance", "merge", str(shards / "s2.db"), "-o", str(tmp_path / "p.db"))
    assert_usage_error(partial, "missing shard 1/2")
    _assert_incomplete(deploykit("conformance", "compare", "--baseline", str(whole), "--db", str(tmp_path / "p.db")),
                       "has not finished: 31 of 62")
    both = deploykit("conformance", "compare", "--baseline", str(shards / "s1.db"), "--db", str(shards / "s1.db"))
    assert both.returncode == 0, both.stderr  # a shard against the same shard compares like with like


@pytest.mark.slow
def test_compare_of_an_incomplete_json_baseline_is_incomplete(shards, tmp_path):
    killed = _unfinished(shards / "whole.db", tmp_path / "killed.db")
    deploykit("conformance", "report", "--db", str(killed), "--format", "json", "-o", str(tmp_path / "killed.json"))
    _assert_incomplete(deploykit("conformance", "compare", "--baseline", str(tmp_path / "killed.json"), "--db", str(shards / "whole.db")),
                       "has not finished")
    report = json.loads(deploykit("conformance", "report", "--db", str(shards / "whole.db"), "--format", "json").stdout)
    report["results"] = report["results"][:40]  # a report cut short (a truncated artifact)
    (tmp_path / "cut.json").write_text(json.dumps(report))
    _assert_incomplete(deploykit("conformance", "compare", "--baseline", str(tmp_path / "cut.json"), "--db", str(shards / "whole.db")),
                       "holds 40 of its 62 results")
    del report["run"]
    (tmp_path / "bare.json").write_text(json.dumps(report))
    _assert_incomplete(deploykit("conformance", "compare", "--baseline", str(tmp_path / "bare.json"), "--db", str(shards / "whole.db")),
                       "has no run record")


@pytest.mark.slow
@pytest.mark.parametrize("args, needle", [
    (["--sigmas", "nan"], "--sigmas nan must be a finite number"),
    (["--sigmas", "inf"], "--sigmas inf must be a finite number"),
    (["--ratio-growth", "nan"], "--ratio-growth nan must be a finite number"),
    (["--ratio-growth", "inf"], "--ratio-growth inf must be a finite number"),
])
def test_compare_refuses_thresholds_that_are_not_finite(shards, args, needle):
    whole = str(shards / "whole.db")
    assert_usage_error(deploykit("conformance", "compare", "--baseline", whole, "--db", whole, *args), needle)


@pytest.mark.slow
def test_compare_refuses_a_run_id_for_a_json_baseline(shards, tmp_path):
    deploykit("conformance", "report", "--db", str(shards / "whole.db"), "--format", "json", "-o", str(tmp_path / "b.json"))
    proc = deploykit("conformance", "compare", "--baseline", str(tmp_path / "b.json"), "--baseline-run", "1",
                     "--db", str(shards / "whole.db"))
    assert_usage_error(proc, "--baseline-run 1", "is a JSON report, which holds one run")
