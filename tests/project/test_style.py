"""The style gate: `ruff check deploykit tests` with the project's own rules (pyproject.toml, [tool.ruff]).

It runs inside the README's test command, so CI and a contributor's `pytest` enforce the same rules
(the pre-commit hook in .pre-commit-config.yaml runs the same command before each commit).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers import ROOT


def _ruff() -> list[str]:
    beside = Path(sys.executable).with_name("ruff")  # the venv's own, pinned in requirements-ci.txt
    found = str(beside) if beside.exists() else shutil.which("ruff")
    assert found, "ruff is not installed: pip install -r requirements-ci.txt"
    return [found]


def test_deploykit_and_its_tests_are_ruff_clean():
    proc = subprocess.run([*_ruff(), "check", "deploykit", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
