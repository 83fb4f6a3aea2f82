"""Fixtures and hooks only: helpers that tests call by name live in helpers.py (tests/README.md)."""

import os

import pytest
from helpers import ROOT, TESTS, deploykit


@pytest.fixture
def fault_backends(monkeypatch):
    """Register the fault-injection backends for this process and the harness's workers."""
    monkeypatch.setenv(
        "DEPLOYKIT_BACKENDS",
        "crashy=fault_backends:CrashBackend,hangy=fault_backends:HangBackend,"
        "drifty=fault_backends:DriftBackend,slowish=fault_backends:SlowBackend,"
        "killed=fault_backends:SigkillBackend,nostart=fault_backends:StartupKillerBackend,"
        "minimal=fault_backends:MinimalOnnxBackend,absent=fault_backends:AbsentBackend",
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(TESTS))
    yield


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """`conformance run --matrix smoke` on the default backends, stored (r.db) and as --json (r.json):
    (folder, the finished process).  Made once per test process and shared by test_cli.py and
    test_reports.py, which compares it with the shipped baseline; tests read it and never change it."""
    folder = tmp_path_factory.mktemp("smoke")
    proc = deploykit("conformance", "run", "--matrix", "smoke", "--db", "r.db", "--json", "r.json", "--jobs", "2", cwd=folder)
    return folder, proc


try:
    from xdist_scheduling import pytest_xdist_make_scheduler  # noqa: F401  (a hook: pytest finds it by name)
except ImportError:  # without pytest-xdist the suite runs in one process and the hook is not needed
    pass
