"""Fixtures and hooks only: helpers that tests call by name live in helpers.py (tests/README.md)."""

import os

import pytest
from helpers import ROOT, TESTS


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
