"""The command line as a user meets it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import AS_ROOT, assert_usage_error, backend_rows, deploykit
from onnx import numpy_helper

from deploykit import backends as registry

pytestmark = pytest.mark.slow  # every test runs the CLI in a subprocess


def test_smoke_run_passes_with_known_divergences_marked(smoke_run):
    folder, proc = smoke_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Verdicts per backend" in proc.stdout
    assert "0 new findings" in proc.stdout
    report = json.loads((folder / "r.json").read_text())
    defaults = registry.default_backends()[0]  # every installed CPU backend of a default run
    assert report["run"]["complete"] and report["run"]["recorded"] == report["run"]["planned"] == 31 * len(defaults)
    records = report["results"]
    backends = {r["backend"] for r in records}
    assert backends == set(defaults) >= {"reference", "onnx-reference", "ort-cpu", "torch-cpu"}
    by = {(r["label"], r["backend"]): r for r in records}
    # The divergences the README lists come out as findings with a reason, marked known.
    ort_op = by[("2d-op-below-dilation-only", "ort-cpu")]
    assert ort_op["verdict"] == "rejected" and ort_op["known_divergence"] == "ort-output-padding-ge-stride"
    assert "output_padding" in ort_op["reason"]
    same = by[("2d-same-kernel-below-stride", "ort-cpu")]
    assert same["verdict"] == "shape-mismatch" and same["expected_shape"] == [1, 3, 8, 8] and same["actual_shape"] == [1, 3, 7, 7]
    assert by[("2d-group2-mg3", "onnx-reference")]["known_divergence"] == "onnx-reference-grouped"
    assert by[("2d-output-shape-positive-odd", "onnx-reference")]["known_divergence"] == "onnx-reference-output-shape-padding"
    # Documented non-support is `unsupported`, never a failure.
    assert by[("2d-f64", "ort-cpu")]["verdict"] == "unsupported"
    assert by[("2d-asym-pads", "torch-cpu")]["verdict"] == "unsupported"
    # Negative cases: every backend refuses them, which is a pass.
    for backend in backends:
        assert by[("neg-group-not-dividing", backend)]["verdict"] == "pass"
    for key in ("config_id", "label", "backend", "dtype", "verdict", "reason", "max_abs_err", "max_rel_err",
                "bound_ratio", "expected_shape", "actual_shape", "known_divergence"):
        assert key in records[0]


def test_report_formats_read_the_database(smoke_run):
    folder, _ = smoke_run
    as_json = deploykit("conformance", "report", "--db", "r.db", "--format", "json", cwd=folder)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == json.loads((folder / "r.json").read_text())
    as_md = deploykit("conformance", "report", "--db", "r.db", "--format", "md", "-o", "r.md", cwd=folder)
    markdown = (folder / "r.md").read_text()
    assert as_md.returncode == 0 and markdown.startswith("### deploykit conformance: ✅ 0 new finding(s)")
    assert "| ort-cpu | 26 |" in markdown and "`ort-output-padding-ge-stride`" in markdown
    table = deploykit("conformance", "report", "--db", "r.db", cwd=folder)
    assert table.returncode == 0 and "Verdicts per backend" in table.stdout


def test_drift_exits_1(tmp_path, fault_backends):
    proc = deploykit("conformance", "run", "--matrix", "smoke", "--backends", "drifty", "--dtypes", "float32", "--db", "d.db", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "drift" in proc.stdout and "new findings" in proc.stdout


def test_backends_lists_everything_with_availability_and_version():
    import onnx
    import onnxruntime

    proc = deploykit("backends", env={"DEPLOYKIT_BACKENDS": "broken=no.such.module:Backend"})
    assert proc.returncode == 0, proc.stderr
    rows = backend_rows(proc.stdout)
    assert set(rows) >= {"reference", "onnx-reference", "ort-cpu", "torch-cpu", "ort-cuda", "torch-cuda", "broken"}
    assert rows["onnx-reference"][:3] == ["cpu", "yes", onnx.__version__]
    assert rows["ort-cpu"][:3] == ["cpu", "yes", onnxruntime.__version__]
    assert rows["reference"][:2] == ["cpu", "yes"]
    torch = pytest.importorskip("torch")
    assert rows["torch-cpu"][:3] == ["cpu", "yes", torch.__version__]
    # A plugin that does not load is listed with why, and hides no other backend.
    assert rows["broken"][1] == "no" and "failed to load" in rows["broken"][3]


def test_generate_writes_the_onnx_backend_test_layout(tmp_path):
    proc = deploykit("generate", "--matrix", "smoke", "--out", str(tmp_path / "suite"))
    assert proc.returncode == 0, proc.stderr
    cases = sorted((tmp_path / "suite").iterdir())
    assert len(cases) == 31
    case = next(c for c in cases if "2d-dcgan-k4s2p1" in c.name)
    model = onnx.load(str(case / "model.onnx"))
    x = numpy_helper.to_array(onnx.load_tensor(str(case / "test_data_set_0" / "input_0.pb")))
    y = numpy_helper.to_array(onnx.load_tensor(str(case / "test_data_set_0" / "output_0.pb")))
    import onnxruntime as ort

    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-6)
    meta = json.loads((case / "deploykit.json").read_text())
    assert meta["expected_shape"] == list(y.shape) == meta["onnx_inferred_shape"]
    same = next(c for c in cases if "2d-same-upper-output-padding" in c.name)
    meta = json.loads((same / "deploykit.json").read_text())
    assert meta["onnx_inferred_shape"] != meta["expected_shape"]  # recorded disagreement
    negative = next(c for c in cases if "neg-group-not-dividing" in c.name)
    assert not (negative / "test_data_set_0" / "output_0.pb").exists()


@pytest.mark.parametrize(
    "args, needles",
    [
        (["conformance", "run", "--backends", "nosuch", "--db", "x.db"], ["unknown backend 'nosuch'", "ort-cpu"]),
        (["conformance", "run", "--matrix", "nosuch", "--db", "x.db"], ["unknown matrix 'nosuch'", "smoke"]),
        (["conformance", "run", "--matrix", "bad.yaml", "--db", "x.db"], ["malformed YAML", "line"]),
        (["conformance", "run", "--matrix", "invalid.yaml", "--db", "x.db"], ["group=3 does not divide in_channels=4", "expect: reject"]),
        (["conformance", "run", "--matrix", "unknown_key.yaml", "--db", "x.db"], ["unknown key(s) stride"]),
        (["conformance", "report", "--db", "missing.db"], ["missing.db does not exist"]),
        (["conformance", "run", "--jobs", "0"], ["--jobs"]),
        (["conformance", "run", "--resume", "--db", "fresh.db"], ["nothing to resume"]),
        (["conformance", "run", "--dtypes", "float8", "--db", "x.db"], ["unknown dtype 'float8'"]),
        (["nosuchcommand"], ["No such command"]),
        (["conformance", "run", "--backends", ",", "--db", "x.db"], ["names no backend"]),
        (["conformance", "run", "--timeout", "nan", "--db", "x.db"], ["must be finite"]),
        (["conformance", "run", "--dtypes", " , ", "--db", "x.db"], ["--dtypes", "names nothing"]),
        (["conformance", "report", "--db", "bad.yaml"], ["is not a deploykit results database"]),
        (["conformance", "report", "--db", "empty.db"], ["results database empty.db is empty"]),
        (["conformance", "compare", "--baseline", ".", "--db", "empty.db"], [". is a directory"]),
        (["repro", "--db", "empty.db", "--config", "x", "--backend", "ort-cpu", "-o", "r"], ["empty.db is empty"]),
        (["generate", "--matrix", "smoke", "--out", "bad.yaml"], ["cannot create the folder"]),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, needles):
    (tmp_path / "bad.yaml").write_text("cases:\n  - {input_shape: [1, 2, 3]\n")
    (tmp_path / "invalid.yaml").write_text(
        "cases:\n  - {input_shape: [1, 4, 5, 5], out_channels: 6, kernel_shape: [3, 3], group: 3}\n"
    )
    (tmp_path / "unknown_key.yaml").write_text("cases:\n  - {input_shape: [1, 4, 5], out_channels: 4, kernel_shape: 3, stride: 2}\n")
    (tmp_path / "empty.db").write_bytes(b"")
    assert_usage_error(deploykit(*args, cwd=tmp_path), *needles)


LAYER = "{input_shape: [1, 2, 3, 3], out_channels: 2, kernel_shape: 2}"


@pytest.mark.parametrize(
    "args, needles",
    [
        (["conformance", "run", "--atol", "-1", "--db", "x.db"], ["--atol", "-1.0 is not in the range x>=0"]),
        (["conformance", "run", "--rtol", "-0.5", "--db", "x.db"], ["--rtol", "-0.5 is not in the range x>=0"]),
        (["conformance", "run", "--matrix", "folder.yaml", "--db", "x.db"], ["matrix folder.yaml is a directory"]),
        (["generate", "--matrix", ".", "--out", "o"], ["matrix . is a directory"]),
        (["generate", "--matrix", "latin1.yaml", "--out", "o"], ["latin1.yaml: not UTF-8 text (byte 0xe9"]),
        (["generate", "--matrix", "empty.yaml", "--out", "o"], ["empty.yaml holds no configs"]),
        (["generate", "--matrix", "smoke", "--out", "bad.yaml/sub"], ["--out bad.yaml/sub", "cannot create the folder"]),
    ],
)
def test_more_bad_input_is_one_line_exit_2(tmp_path, args, needles):
    (tmp_path / "bad.yaml").write_text("not a folder\n")
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "latin1.yaml").write_bytes(f"cases:\n  - {{name: caf\xe9, {LAYER[1:]}\n".encode("latin-1"))
    (tmp_path / "empty.yaml").write_text("name: nothing-yet\ncases: []\n")
    assert_usage_error(deploykit(*args, cwd=tmp_path), *needles)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("target", ["folder", "file/under-a-file.json"])
def test_an_unwritable_json_path_fails_before_any_work(tmp_path, target):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("a regular file\n")
    proc = deploykit("conformance", "run", "--matrix", "smoke", "--db", "x.db", "--json", target, cwd=tmp_path)
    assert_usage_error(proc, f"--json {target}")
    assert not (tmp_path / "x.db").exists()  # refused before the run started


def test_an_existing_json_file_is_probed_without_truncating_it(tmp_path):
    (tmp_path / "m.yaml").write_text(f"cases:\n  - {{name: bad, {LAYER[1:-1]}, group: 3}}\n")
    (tmp_path / "keep.json").write_text("previous\n")
    proc = deploykit("conformance", "run", "--matrix", "m.yaml", "--db", "x.db", "--json", "keep.json", cwd=tmp_path)
    assert_usage_error(proc, "group=3 does not divide")
    assert (tmp_path / "keep.json").read_text() == "previous\n"


def test_generate_into_an_unwritable_folder_is_one_line(tmp_path):
    if AS_ROOT:
        out = Path("/proc/self")  # root may write anywhere else, but procfs never takes new files
        if not out.is_dir():
            pytest.skip("running as root without /proc: no folder root cannot write to")
    else:
        out = tmp_path / "read-only"
        out.mkdir()
        out.chmod(0o555)
    proc = deploykit("generate", "--matrix", "smoke", "--out", str(out), cwd=tmp_path)
    assert_usage_error(proc, f"--out {out}", "cannot write")


def test_a_missing_divergence_table_fails_before_any_work(tmp_path):
    """Without the table every known divergence would count as a new finding: refuse to run."""
    (tmp_path / "m.yaml").write_text(f"cases:\n  - {LAYER}\n")
    proc = deploykit("conformance", "run", "--matrix", "m.yaml", "--db", "x.db",
                     env={"DEPLOYKIT_CONFORMANCE_DIR": str(tmp_path / "elsewhere")}, cwd=tmp_path)
    assert_usage_error(proc, "known-divergence table", "known_divergences.yaml does not exist")
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("command", [["conformance", "run", "--matrix", "smoke"], ["conformance", "fuzz", "--max-examples", "3"]])
def test_a_named_backend_that_cannot_run_is_a_usage_error(fault_backends, tmp_path, command):
    """A CI job that names a backend must not go green because it is missing: exit 2, its reason, no database."""
    proc = deploykit(*command, "--backends", "reference,absent", "--db", "r.db", cwd=tmp_path)
    assert proc.returncode == 2 and "absent is not available" in proc.stderr and "pip install absent" in proc.stderr
    assert not (tmp_path / "r.db").exists()
