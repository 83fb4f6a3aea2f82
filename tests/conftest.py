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


def skip_unless_openvino_applies(precision: str) -> None:
    """Skip a check of OpenVINO at a reduced build precision where its CPU plugin does not run it,
    with OpenVINO's own reason (OPTIMIZATION_CAPABILITIES): there it is `unsupported`, not judged.
    On a CPU that lists the capability the check runs and asserts."""
    from deploykit.backends import cpu_features
    from deploykit.backends.openvino import HINTS

    lacking = cpu_features.openvino_lacks(precision)
    if lacking:
        pytest.skip(f"{lacking}: OpenVINO does not apply the {HINTS[precision]} hint")


def skip_without_cpu_flag(flag: str, why: str) -> None:
    """Skip what only a CPU with `flag` (as /proc/cpuinfo lists it) shows, saying what needs it."""
    from deploykit.backends import cpu_features
    if flag not in cpu_features.x86_flags():
        pytest.skip(f"this CPU has no {flag}: {why}")


#: Known divergences in oneDNN's AMX bfloat16 kernels, measured on an AMX CPU: other CPUs run other
#: kernels, so their repros and their predicates' "wide" checks need the flag.
NEEDS_CPU_FLAG = dict.fromkeys(("openvino-bf16-3d-output-padding-unwritten", "torch-bf16-3d-output-padding-unwritten",
                                "openvino-bf16-output-between-taps-crash", "openvino-bf16-strided-unreached-bias"), "amx_bf16")
