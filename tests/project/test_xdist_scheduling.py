"""Under `-n 2` a worker that dies costs one failed test, never a run that waits forever.

A runtime's kernel can kill the test process (OpenVINO's AMX bfloat16 deconvolution raises SIGSEGV
on some CPUs).  xdist's own file-at-a-time scheduler then hung the whole run (xdist_scheduling.py
says why); here pytest runs a small suite with one such test under the project's scheduler.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import TESTS

pytest.importorskip("xdist")

CRASHING = """
import os, signal, time

def test_before():
    time.sleep(0.3)

def test_dies():
    os.kill(os.getpid(), signal.SIGSEGV)

def test_after():
    pass
"""
QUIET = "import time\n" + "".join(f"def test_{k}():\n    time.sleep(0.1)\n" for k in range(4))


def test_a_worker_crash_fails_its_test_and_the_run_finishes(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # the project's configuration stays out
    (tmp_path / "test_crashing.py").write_text(CRASHING)
    for module in range(4):
        (tmp_path / f"test_quiet_{module}.py").write_text(QUIET)
    command = [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", "-p", "xdist_scheduling"]
    try:
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**_environ(), "PYTHONPATH": str(TESTS)})
    except subprocess.TimeoutExpired:
        pytest.fail("the run did not finish within 120 s after a worker crashed")
    assert "1 failed, 18 passed" in done.stdout, done.stdout[-2000:]
    assert "crashed while running 'test_crashing.py::test_dies'" in done.stdout


def _environ() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")}
