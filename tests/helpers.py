"""What several test files share: the repository's paths, the command line run as a user runs it,
the usual assertions on its output, and the skips that depend on this machine.

A plain module, not a conftest: test files import it by name (`from helpers import deploykit`) so a
reader sees where a helper comes from, and no test file imports another.  Fixtures and pytest hooks
stay in conftest.py.  tests/README.md says what goes where.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: This folder (tests/) and the repository's root.
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

#: CI runs the tests as root, for whom file permissions do not apply.
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

#: Known divergences in oneDNN's AMX bfloat16 kernels, measured on an AMX CPU: other CPUs run other
#: kernels, so their repros and their predicates' "wide" checks need the flag.
NEEDS_CPU_FLAG = dict.fromkeys(("openvino-bf16-3d-output-padding-unwritten", "torch-bf16-3d-output-padding-unwritten",
                                "openvino-bf16-output-between-taps-crash", "openvino-bf16-strided-unreached-bias"), "amx_bf16")

#: Backends that compile each model they load (a second or more a config, on a loaded machine).
COMPILING = ("tvm-cpu", "tinygrad-cpu")


def slow_if_compiling(backend: str) -> tuple:
    """The marks for a parametrized case on `backend`: `slow` where the backend compiles each model,
    so that the fast tier (`-m "not slow"`) keeps the other backends' cases."""
    return (pytest.mark.slow,) if backend in COMPILING else ()


def deploykit(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 240):
    """Run `python -m deploykit ARGS` in a subprocess, as a user would, with this checkout importable."""
    return subprocess.run(
        [sys.executable, "-m", "deploykit", *args],
        capture_output=True, text=True, cwd=cwd, timeout=timeout,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **(env or {})},
    )


def assert_usage_error(proc, *needles: str) -> None:
    """A usage error as the CLI promises it: exit 2, no traceback, one line on stderr naming `needles`."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def backend_rows(stdout: str) -> dict[str, list[str]]:
    """`deploykit backends` table rows by backend name: [device, available, version, reason]."""
    rows = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) == 5 and cells[0] and cells[0] != "backend":
            rows[cells[0]] = cells[1:]
    return rows


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry below `folder`: a file's content hash, a symlink's target, a folder's name."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[key] = "folder"
    return found


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
