"""Isolation and durability: crashes and hangs cost one config, SIGKILL loses nothing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from helpers import ROOT

from deploykit.execution.harness import Task, WorkerOptions, run_tasks
from deploykit.op.spec import ConvTransposeSpec

pytestmark = pytest.mark.slow  # every test runs isolated workers or the CLI in a subprocess

SPEC = ConvTransposeSpec((1, 2, 4, 4), 3, (3, 3), strides=2, pads=1)
OTHER = ConvTransposeSpec((1, 2, 5), 2, (2,), strides=2)


def _collect(tasks, **kwargs):
    results = []
    run_tasks(tasks, results.append, **kwargs)
    return {(r.config_id, r.backend): r for r in results}


def test_a_segfaulting_backend_costs_one_config(fault_backends):
    got = _collect([Task(SPEC, "crashy"), Task(SPEC, "reference"), Task(OTHER, "crashy"), Task(OTHER, "reference")], jobs=1)
    crash = got[(SPEC.id, "crashy")]
    assert crash.verdict == "crash" and "SIGSEGV" in crash.reason
    assert got[(OTHER.id, "crashy")].verdict == "crash"
    assert got[(SPEC.id, "reference")].verdict == "pass"
    assert got[(OTHER.id, "reference")].verdict == "pass"


def test_a_hanging_backend_times_out_and_the_run_goes_on(fault_backends):
    started = time.monotonic()
    got = _collect([Task(SPEC, "hangy"), Task(SPEC, "reference"), Task(OTHER, "reference")], jobs=2, timeout=3)
    assert got[(SPEC.id, "hangy")].verdict == "timeout"
    assert "3 s" in got[(SPEC.id, "hangy")].reason
    assert got[(SPEC.id, "reference")].verdict == got[(OTHER.id, "reference")].verdict == "pass"
    assert time.monotonic() - started < 60


def _count(db) -> int:
    try:
        with sqlite3.connect(db) as connection:
            return connection.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_resume_after_sigkill_finishes_without_duplicates(tmp_path, fault_backends):
    db = tmp_path / "r.db"
    log = tmp_path / "executions.log"  # the slowish backend appends each config it runs
    env = {**os.environ, "DEPLOYKIT_TEST_LOG": str(log)}
    command = [sys.executable, "-m", "deploykit", "conformance", "run", "--matrix", "smoke", "--backends", "slowish", "--db", str(db)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
    deadline = time.monotonic() + 120
    while _count(db) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _count(db)
    assert 4 <= partial < 31
    with sqlite3.connect(db) as connection:
        stored = {r[0] for r in connection.execute("SELECT config_id FROM results")}
    log.write_text("")
    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT config_id, expect, backend FROM results").fetchall()
        runs = connection.execute("SELECT status, planned FROM runs").fetchall()
    assert len(rows) == 31
    assert runs == [("complete", 31)]
    # The primary key would hide a re-run result; the execution log does not: the resumed run
    # ran exactly the configs that had no stored result, each once.
    rerun = log.read_text().split()
    assert len(rerun) == len(set(rerun)) == 31 - partial
    assert not set(rerun) & stored
    again = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 2 and "nothing to resume" in again.stderr


def test_worker_start_up_does_not_count_against_the_timeout():
    """Importing torch takes longer than this timeout; computing the config does not."""
    got = _collect([Task(SPEC, "torch-cpu"), Task(OTHER, "torch-cpu")], timeout=0.5,
                   options=WorkerOptions(preload=("torch-cpu",)))
    assert {r.verdict for r in got.values()} == {"pass"}, [r.reason for r in got.values()]
