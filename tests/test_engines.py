"""The CPU engines beyond ONNX Runtime: OpenVINO and tract, each a real backend on the contract.

Their accumulation models are measured in tests/test_accumulation.py; here: the API pitfalls
deploykit works around (OpenVINO's bfloat16 labelling, tract's panics), their conformance on the
shipped matrix, lint's hazards for them, and the standalone repro of every divergence they have.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from conftest import ROOT
from deploykit import backends as registry
from deploykit.backends.base import BuildConfig
from deploykit.divergences import load as load_divergences
from deploykit.execute import Executor
from deploykit.onnxgen import build_case
from deploykit.reference import run_spec
from deploykit.spec import ConvTransposeSpec
from test_cli import deploykit

REPROS = ROOT / "conformance" / "repros"


def _available(name: str):
    backend = registry.get(name)
    availability = backend.probe()
    if not availability.available:
        pytest.skip(f"{name} unavailable: {availability.reason}")
    return backend


def test_openvino_feeds_bfloat16_by_its_bits_and_refuses_a_mismatch():
    """OpenVINO's infer() converts a bfloat16 array by value to float16 and reads it as bf16
    (conformance/repros/openvino-python-bfloat16-feeds); the runner passes the raw bits."""
    backend = _available("openvino-cpu")
    spec = ConvTransposeSpec((1, 4, 5, 5), 3, (3, 3), strides=2, dtype="bfloat16", opset=22)
    case = build_case(spec)
    runner = backend.load(case, BuildConfig())
    runner.activate()
    [y] = runner.infer(case.feeds).values()
    assert y.dtype == np.dtype(ml_dtypes.bfloat16)
    exact = run_spec(spec, case.x, case.w, case.b)
    assert np.max(np.abs(y.astype(np.float64) - exact)) < 0.05
    with pytest.raises(TypeError, match="input X is bf16, got float32"):
        runner.infer({"X": case.x.astype(np.float32)})


def test_openvino_build_precision_reaches_the_deconvolution():
    backend = _available("openvino-cpu")
    case = build_case(ConvTransposeSpec((1, 8, 6, 6), 4, (4, 4), strides=2, pads=1))
    precisions = {}
    for precision in ("fp32", "fp16"):
        runner = backend.load(case, BuildConfig(precision))
        runner.activate()
        precisions[precision] = {kind for layer, _, kind in runner.executed_kernels() if layer == "Deconvolution"}
    assert precisions == {"fp32": {"f32"}, "fp16": {"f16"}}


def test_a_tract_panic_costs_one_crash_and_this_process_survives():
    """In-process (profile, export), a backend that can abort the process runs in a child."""
    _available("tract-cpu")
    panics = ConvTransposeSpec((1, 1, 2), 1, (2,), auto_pad="SAME_UPPER", output_shape=(2,), bias=False)
    result = Executor().run(panics, "tract-cpu")
    assert result.verdict == "crash" and "Unsupported padding in deconvolution" in result.reason
    assert result.known_divergence == "tract-output-shape-with-same"
    assert Executor().run(panics.replace(output_shape=None), "tract-cpu").verdict in ("pass", "rejected")


@pytest.mark.parametrize("backend", ["openvino-cpu", "tract-cpu"])
def test_smoke_matrix_has_no_unexplained_result(tmp_path, backend):
    _available(backend)
    proc = deploykit("conformance", "run", "--matrix", "smoke", "--dtypes", "float32,float16", "--backends", backend,
                     "--precisions", "fp32,fp16", "--db", "r.db", "--json", "r.json", "--jobs", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    records = json.loads((tmp_path / "r.json").read_text())["results"]
    assert len(records) == 31 * 2 * 2
    unexplained = [r for r in records if r["verdict"] not in ("pass", "unsupported") and not r["known_divergence"]]
    assert not unexplained
    assert sum(r["verdict"] == "pass" for r in records) >= 100


def test_lint_names_the_new_engines_hazards(tmp_path):
    model = tmp_path / "same-output-shape.onnx"
    spec = ConvTransposeSpec((1, 2, 4, 4), 2, (3, 3), strides=2, auto_pad="SAME_UPPER", output_shape=(8, 8))
    model.write_bytes(build_case(spec).model_bytes)
    proc = deploykit("lint", str(model), "--backends", "tract-cpu,openvino-cpu", "--json", str(tmp_path / "l.json"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [node] = json.loads((tmp_path / "l.json").read_text())["nodes"]
    rules = {f["rule"] for f in node["findings"] if f["kind"] == "hazard"}
    assert {"tract-output-shape-with-same"} <= rules


def _repros() -> list[Path]:
    return sorted(REPROS.glob("*/repro.py"))


def test_every_not_yet_reported_divergence_has_a_repro():
    for entry in load_divergences():
        if entry.upstream.startswith("not yet reported"):
            assert entry.repro and (ROOT / entry.repro).is_file(), entry.id
    assert {p.parent.name for p in _repros()} >= {e.id for e in load_divergences() if e.repro}


@pytest.mark.parametrize("repro", _repros(), ids=lambda p: p.parent.name)
def test_each_repro_still_shows_its_divergence(repro):
    """A repro exits non-zero while the runtime disagrees with the spec: when an upstream release
    fixes one, this fails and the known divergence gets a version range."""
    runtime = "openvino" if repro.parent.name.startswith("openvino") else "tract"
    pytest.importorskip(runtime)
    proc = subprocess.run([sys.executable, str(repro)], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "RUST_BACKTRACE": "0"})
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
