import os
import shutil
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
        "drifty=fault_backends:DriftBackend,slowish=fault_backends:SlowBackend,"
        "killed=fault_backends:SigkillBackend,nostart=fault_backends:StartupKillerBackend,"
        "minimal=fault_backends:MinimalOnnxBackend,absent=fault_backends:AbsentBackend",
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(TESTS))
    yield


AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def without_root_overrides(command: list[str]) -> list[str]:
    """Run `command` so that file permissions apply even as root (CI runs tests as root).

    setpriv drops every capability, CAP_DAC_OVERRIDE included; without setpriv the test skips.
    """
    if not AS_ROOT:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file permissions cannot be made to apply")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-all", *command]
