import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture
def fault_backends(monkeypatch):
    """Register the fault-injection backends for this process and the harness's workers."""
    monkeypatch.setenv(
        "DEPLOYKIT_BACKENDS",
        "crashy=fault_backends:CrashBackend,hangy=fault_backends:HangBackend,"
        "drifty=fault_backends:DriftBackend,slowish=fault_backends:SlowBackend",
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(TESTS))
    yield
