"""Every module imports with no optional dependency, and a missing one is explained, not raised."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow  # each test imports the package in a fresh interpreter

BLOCKER = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'tensorrt', 'pycuda', 'cuda', 'onnxscript', 'polygraphy'):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, _Block())
"""


def _run(tmp_path, code: str) -> subprocess.CompletedProcess:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_every_module_imports_without_optional_packages(tmp_path):
    code = """
import importlib, pkgutil, deploykit
names = [m.name for m in pkgutil.walk_packages(deploykit.__path__, 'deploykit.') if not m.name.endswith('__main__')]
for name in names:
    importlib.import_module(name)
print(len(names))
"""
    proc = _run(tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 15


def test_missing_torch_makes_torch_cpu_unavailable_with_the_install_command(tmp_path):
    code = """
from deploykit.execution.execute import Executor
from deploykit.op.spec import ConvTransposeSpec
r = Executor(known=[]).run(ConvTransposeSpec((1, 2, 3, 3), 2, (2, 2)), 'torch-cpu')
print(r.verdict, '|', r.reason)
"""
    proc = _run(tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("unavailable |")
    assert "pip install 'deploykit[torch]'" in proc.stdout
