"""The typing gate: `mypy` with the project's own configuration (pyproject.toml, [tool.mypy]) on deploykit/.

It runs inside the README's test command, so CI and a contributor's `pytest` hold the code to the same
annotations; the configuration names what it checks (`packages = ["deploykit"]`), so the command is just `mypy`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mypy() -> list[str]:
    beside = Path(sys.executable).with_name("mypy")  # the venv's own, pinned in requirements-ci.txt
    found = str(beside) if beside.exists() else shutil.which("mypy")
    if not found:
        pytest.skip("mypy is not installed: pip install -r requirements-ci.txt")
    return [found]


@pytest.mark.slow  # a cold run: about 30 s on two cores
def test_deploykit_is_mypy_clean(tmp_path):
    # A cache of its own: a stale or shared .mypy_cache must not decide the result.
    proc = subprocess.run([*_mypy(), "--cache-dir", str(tmp_path / "cache")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("Success: no issues found"), proc.stdout
