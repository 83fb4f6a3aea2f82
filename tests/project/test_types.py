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
from helpers import ROOT


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


def test_left_out_per_axis_attributes_are_the_onnx_default_and_none_still_means_it():
    """The four per-axis attributes are typed as the tuples they always are once built; their default is a marker
    (`ONNX_DEFAULT`) instead of None, which must still mean the same, while an explicit `[]` stays a length error."""
    from deploykit.op.spec import ONNX_DEFAULT, ConvTransposeSpec, SpecError

    omitted = ConvTransposeSpec((1, 2, 5, 5), 3, (3, 3))
    given_none = ConvTransposeSpec((1, 2, 5, 5), 3, (3, 3), strides=None, pads=None, output_padding=None, dilations=None)
    given_marker = ConvTransposeSpec((1, 2, 5, 5), 3, (3, 3), strides=ONNX_DEFAULT, pads=ONNX_DEFAULT)
    assert omitted == given_none == given_marker
    assert (omitted.strides, omitted.pads, omitted.output_padding, omitted.dilations) == ((1, 1), (0, 0, 0, 0), (0, 0), (1, 1))
    assert omitted.id == given_none.id
    with pytest.raises(SpecError, match="strides has 0 values, expected 2"):
        ConvTransposeSpec((1, 2, 5, 5), 3, (3, 3), strides=[])
