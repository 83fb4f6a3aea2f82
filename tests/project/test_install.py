"""A normal (non-editable) install: the wheel carries the matrices and the known-divergence table.

The working tree is copied, built into a wheel and installed into a fresh venv, which then runs
from an empty directory with the repository off sys.path, so nothing can be found through the
source tree.  To stay fast, the fresh venv reuses this interpreter's installed dependencies through
a .pth line; .pth files inside a directory added that way are not processed, so the editable
install of the running venv cannot leak in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow  # builds a wheel and an sdist and installs them into fresh venvs

CONFORMANCE = ROOT / "conformance"
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "*.db*", "out"
)
PROBE = (
    "import json, sys, deploykit, deploykit.paths as p; "
    "print(json.dumps({'module': deploykit.__file__, 'sys_path': sys.path, "
    "'divergences': str(p.KNOWN_DIVERGENCES), 'matrices': str(p.MATRICES_DIR)}))"
)


def _run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{command} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _build_flags() -> list[str]:
    """Build with this venv's setuptools when it can make wheels itself (>= 70.1: offline, fast);
    otherwise let pip fetch pyproject's build requirement, as a plain `pip install .` does."""
    major, minor = (int(part) for part in metadata.version("setuptools").split(".")[:2])
    return ["--no-build-isolation"] if (major, minor) >= (70, 1) else []


def _pip_wheel(source: Path, out: Path) -> Path:
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", *_build_flags(), "-w", out, source)
    (wheel,) = out.glob("deploykit-*.whl")
    return wheel


def _clean_env(**extra: str) -> dict[str, str]:
    """The user's environment without anything that points deploykit at the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env = {k: v for k, v in env.items() if not k.startswith("DEPLOYKIT_")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The working tree as a fresh checkout sees it; building in a copy leaves the checkout alone."""
    copy = tmp_path_factory.mktemp("source") / "deploykit"
    shutil.copytree(ROOT, copy, ignore=NOT_SOURCE)
    return copy


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    return _pip_wheel(source, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed and this interpreter's dependencies visible after it."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    dependencies = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "_dependencies.pth").write_text("".join(f"{path}\n" for path in dependencies))
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel)
    return venv


def _package_files(wheel: Path) -> set[str]:
    """The wheel's files without its dist-info, whose RECORD differs from build to build."""
    return {name for name in zipfile.ZipFile(wheel).namelist() if not name.startswith("deploykit-")}


def _probe(venv: Path, cwd: Path, **env: str) -> dict:
    return json.loads(_run(venv / "bin" / "python", "-c", PROBE, cwd=cwd, env=_clean_env(**env)).stdout)


def test_wheel_ships_every_module_and_the_conformance_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "deploykit").rglob("*.py")}
    data = {
        f"deploykit/_conformance/{p.relative_to(CONFORMANCE).as_posix()}"
        for p in [CONFORMANCE / "known_divergences.yaml", *(CONFORMANCE / "matrices").glob("*.yaml")]
    }
    assert "deploykit/_conformance/matrices/smoke.yaml" in data
    assert modules - names == set(), "a subpackage is missing from pyproject.toml's packages list"
    assert data - names == set()
    assert [n for n in names if n.startswith("tests/") or Path(n).name.startswith(("test_", "conftest"))] == []


def test_wheel_ships_py_typed_for_plugin_authors(wheel):
    """PEP 561: without the marker, type checkers ignore deploykit's hints in a backend plugin."""
    assert "deploykit/py.typed" in zipfile.ZipFile(wheel).namelist()


def test_installed_wheel_runs_the_smoke_matrix_from_an_empty_directory(venv, tmp_path):
    found = _probe(venv, tmp_path)
    assert Path(found["module"]).resolve().is_relative_to(venv.resolve())
    assert Path(found["divergences"]).resolve().is_relative_to(venv.resolve()) and Path(found["divergences"]).is_file()
    assert Path(found["matrices"], "smoke.yaml").is_file()
    assert all(Path(entry or tmp_path).resolve() != ROOT for entry in found["sys_path"])

    proc = _run(venv / "bin" / "deploykit", "conformance", "run", "--matrix", "smoke", cwd=tmp_path, env=_clean_env())
    summary = proc.stdout.strip().splitlines()[-1]
    assert "0 new findings" in summary
    known = re.search(r"(\d+) known divergences", summary)
    assert known and int(known.group(1)) > 0, summary


def test_conformance_dir_override_wins_over_the_installed_data(venv, tmp_path):
    found = _probe(venv, tmp_path, DEPLOYKIT_CONFORMANCE_DIR=str(tmp_path))
    assert found["divergences"] == str(tmp_path / "known_divergences.yaml")
    assert found["matrices"] == str(tmp_path / "matrices")


def test_sdist_builds_the_same_wheel(source, wheel, tmp_path):
    build = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    sdist = tmp_path / _run(sys.executable, "-c", build, tmp_path, cwd=source).stdout.strip().splitlines()[-1]
    assert _package_files(_pip_wheel(sdist, tmp_path / "wheel")) == _package_files(wheel)
