"""`deploykit repro`: a folder whose repro.py runs with NumPy and the runtime alone."""

from __future__ import annotations

import dataclasses
import errno
import json
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import snapshot

from deploykit.errors import UsageError
from deploykit.execution.execute import Executor
from deploykit.op.spec import ConvTransposeSpec
from deploykit.repro.bundle import write_bundle
from deploykit.repro.templates import script_text
from deploykit.results.store import Store

#: repro.py run with these imports made impossible: it must need none of them
BLOCKED = ("deploykit", "onnx", "ml_dtypes", "hypothesis", "rich", "click")


def _stored(tmp_path: Path, spec: ConvTransposeSpec, backend: str, verdict: str | None = None,
            parameters: dict | None = None) -> Path:
    """A results database holding the real result of `backend` on `spec` (its verdict replaced if asked)."""
    result = Executor().run(spec, backend)
    if verdict is not None:
        result.verdict = verdict
    db = tmp_path / "results.db"
    store = Store(db)
    run_id = store.start_run("test", parameters or {}, {"packages": {"onnx": "x"}, "cpu": "test cpu"}, 1, None)
    store.add(run_id, result)
    store.finish_run(run_id)
    store.close()
    return db


def _run_script(folder: Path, allow: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    blocked = [name for name in BLOCKED if name not in allow]
    code = ("import runpy, sys\n"
            f"for name in {blocked!r}:\n    sys.modules[name] = None  # importing it raises ImportError\n"
            "runpy.run_path('repro.py', run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=120)


OUTPUT_SHAPE_EXTENSION = ConvTransposeSpec(input_shape=(1, 1, 1), out_channels=1, kernel_shape=(1,), output_shape=(2,), bias=False)


@pytest.mark.slow
def test_ort_refusal_reproduces_without_deploykit_or_onnx(tmp_path):
    db = _stored(tmp_path, OUTPUT_SHAPE_EXTENSION, "ort-cpu")
    bundle = write_bundle(db, OUTPUT_SHAPE_EXTENSION.id, "ort-cpu", tmp_path / "bundle")
    assert bundle.result.verdict == "rejected"
    assert {"model.onnx", "X.npy", "W.npy", "expected.npy", "bound.npy", "repro.py", "ISSUE.md"} <= set(bundle.files)
    done = _run_script(tmp_path / "bundle")
    assert done.returncode == 1, done.stderr
    assert "refused a valid model" in done.stdout and "Explicit output_shape" in done.stdout
    issue = (tmp_path / "bundle" / "ISSUE.md").read_text()
    assert "total_padding[i] = stride[i] * (input_size[i] - 1)" in " ".join(issue.replace("> ", " ").split())  # quoted
    assert "`output_shape` | `[2]`" in issue and "onnxruntime==" in issue and "test cpu" in issue
    assert "o = i*stride - pads_begin + k*dilation" in issue  # the values, written out


def test_a_run_with_several_precisions_reproduces_its_fp32_result(tmp_path):
    """`conformance run --precisions fp32,fp16` stores one result per precision: the config id still names one."""
    db = _stored(tmp_path, OUTPUT_SHAPE_EXTENSION, "ort-cpu")
    store = Store(db)
    [result] = store.results(1)
    store.add(1, dataclasses.replace(result, precision="fp16"))
    store.close()
    bundle = write_bundle(db, OUTPUT_SHAPE_EXTENSION.id, "ort-cpu", tmp_path / "bundle")
    assert bundle.result.precision == "fp32" and bundle.result.verdict == "rejected"


def test_issue_title_without_a_recorded_version(tmp_path):
    from deploykit.repro.templates import issue_title

    db = _stored(tmp_path, OUTPUT_SHAPE_EXTENSION, "ort-cpu")
    bundle = write_bundle(db, OUTPUT_SHAPE_EXTENSION.id, "ort-cpu", tmp_path / "bundle")
    unknown = dataclasses.replace(bundle.result, backend_version=None)
    assert issue_title(OUTPUT_SHAPE_EXTENSION, unknown, bundle.recipe).startswith("onnxruntime: ConvTranspose refuses")


def test_a_fixed_runtime_exits_0(tmp_path):
    """A drift verdict on a config ORT computes right stands for a fixed runtime: the script says so."""
    spec = ConvTransposeSpec(input_shape=(1, 2, 3, 3), out_channels=2, kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    db = _stored(tmp_path, spec, "ort-cpu", verdict="drift")
    write_bundle(db, spec.label, "ort-cpu", tmp_path / "bundle")
    done = _run_script(tmp_path / "bundle")
    assert done.returncode == 0 and "fixed" in done.stdout, done.stdout + done.stderr


def test_wrong_values_exit_1_with_the_worst_element(tmp_path):
    spec = ConvTransposeSpec(input_shape=(1, 1, 3), out_channels=1, kernel_shape=(2,), bias=False)
    db = _stored(tmp_path, spec, "ort-cpu", verdict="drift")
    write_bundle(db, spec.id, "ort-cpu", tmp_path / "bundle")
    expected = tmp_path / "bundle" / "expected.npy"
    import numpy as np

    np.save(expected, np.load(expected) + 1.0)  # as if the runtime were off by one everywhere
    done = _run_script(tmp_path / "bundle")
    assert done.returncode == 1 and "beyond the rounding-error bound" in done.stdout, done.stdout + done.stderr


@pytest.mark.slow
def test_spec_invalid_model_run_by_onnx_reference(tmp_path):
    spec = ConvTransposeSpec(input_shape=(1, 1, 1), out_channels=1, kernel_shape=(3,), auto_pad="SAME_UPPER", pads=(1, 1),
                             bias=False, expect="reject")
    db = _stored(tmp_path, spec, "onnx-reference")
    bundle = write_bundle(db, spec.id, "onnx-reference", tmp_path / "bundle")
    assert bundle.result.verdict == "accepted-invalid" and "expected.npy" not in bundle.files
    done = _run_script(tmp_path / "bundle", allow=("onnx", "ml_dtypes"))  # onnx (which needs ml_dtypes) is this runtime
    assert done.returncode == 1 and "rules out" in done.stdout, done.stdout + done.stderr
    issue = " ".join((tmp_path / "bundle" / "ISSUE.md").read_text().replace("> ", " ").split())
    assert "This attribute cannot be used simultaneously with auto_pad" in issue


def test_a_runtime_part_missing_is_no_refusal(tmp_path):
    """A run() whose import fails (tinygrad, TVM and TensorRT import inside run()) must not pass for
    the refusal a spec-invalid model asks for."""
    spec = ConvTransposeSpec(input_shape=(1, 1, 1), out_channels=1, kernel_shape=(3,), auto_pad="SAME_UPPER", pads=(1, 1),
                             bias=False, expect="reject")
    bundle = write_bundle(_stored(tmp_path, spec, "onnx-reference"), spec.id, "onnx-reference", tmp_path / "bundle")
    recipe = dataclasses.replace(bundle.recipe, run="def run(model_path, feeds):\n    import deploykit_absent_runtime_part\n")
    (tmp_path / "bundle" / "repro.py").write_text(script_text(spec, bundle.result, recipe, ["Y"]))
    done = _run_script(tmp_path / "bundle", allow=("onnx", "ml_dtypes"))
    assert done.returncode != 0 and "as it should" not in done.stdout, done.stdout + done.stderr


def test_a_folder_holding_another_results_bundle_is_refused_untouched(tmp_path):
    """A bundle of another config must not be replaced (it used to be overwritten file by file)."""
    valid = ConvTransposeSpec(input_shape=(1, 1, 3), out_channels=1, kernel_shape=(2,))
    invalid = ConvTransposeSpec(input_shape=(1, 1, 1), out_channels=1, kernel_shape=(3,), auto_pad="SAME_UPPER", pads=(1, 1),
                                bias=False, expect="reject")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first = write_bundle(_stored(tmp_path / "a", valid, "ort-cpu", verdict="drift"), valid.id, "ort-cpu", tmp_path / "bundle")
    assert {"B.npy", "expected.npy", "bound.npy"} <= set(first.files)
    before = snapshot(tmp_path / "bundle")
    with pytest.raises(UsageError, match="holds the repro bundle of another result"):
        write_bundle(_stored(tmp_path / "b", invalid, "onnx-reference"), invalid.id, "onnx-reference", tmp_path / "bundle")
    assert snapshot(tmp_path / "bundle") == before


@pytest.mark.slow
def test_torch_backends_write_a_torch_script(tmp_path):
    pytest.importorskip("torch", reason="torch is not installed (pip install 'deploykit[torch]')")
    spec = ConvTransposeSpec(input_shape=(1, 2, 3), out_channels=4, kernel_shape=(3,), strides=(2,), pads=(1, 1), group=2)
    db = _stored(tmp_path, spec, "torch-cpu", verdict="drift")
    write_bundle(db, spec.id, "torch-cpu", tmp_path / "bundle")
    script = (tmp_path / "bundle" / "repro.py").read_text()
    assert "conv_transpose1d" in script and "groups=2" in script
    done = _run_script(tmp_path / "bundle")
    assert done.returncode == 0 and "fixed" in done.stdout, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("config, backend, message", [
    ("nonesuch", "ort-cpu", "has no result of ort-cpu"),
    ("OUTPUT", "onnx-reference", "has no result of onnx-reference"),
])
def test_cli_usage_errors(tmp_path, config, backend, message):
    db = _stored(tmp_path, OUTPUT_SHAPE_EXTENSION, "ort-cpu")
    config = OUTPUT_SHAPE_EXTENSION.id if config == "OUTPUT" else config
    done = subprocess.run([sys.executable, "-m", "deploykit", "repro", "--db", str(db), "--config", config,
                           "--backend", backend, "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_pass_has_nothing_to_reproduce(tmp_path):
    spec = ConvTransposeSpec(input_shape=(1, 1, 3), out_channels=1, kernel_shape=(2,))
    db = _stored(tmp_path, spec, "ort-cpu")
    done = subprocess.run([sys.executable, "-m", "deploykit", "repro", "--db", str(db), "--config", spec.id,
                           "--backend", "ort-cpu", "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "nothing to reproduce" in done.stderr
    assert not (tmp_path / "out").exists()


# ----- the folder: nothing the bundle did not write is ever replaced -------------------------------------------------

VALID = ConvTransposeSpec(input_shape=(1, 1, 3), out_channels=1, kernel_shape=(2,))


def _repro_cli(db: Path, spec: ConvTransposeSpec, folder: Path, *, limit_file_size: int | None = None):
    """`deploykit repro` as a user runs it; with `limit_file_size`, under `ulimit -f` (bytes)."""
    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    return subprocess.run([sys.executable, "-m", "deploykit", "repro", "--db", str(db), "--config", spec.id, "--backend",
                           "ort-cpu", "-o", str(folder)], capture_output=True, text=True, timeout=120,
                          preexec_fn=limit if limit_file_size else None)


def _one_line_usage_error(done: subprocess.CompletedProcess, needle: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and needle in lines[0], (done.returncode, done.stderr)


def _leftovers(folder: Path) -> list[str]:
    """Staging or set-aside folders a bundle write left beside its target."""
    return [p.name for p in folder.iterdir() if ".deploykit-" in p.name]


@pytest.mark.slow
def test_a_folder_of_the_users_own_files_is_refused_untouched(tmp_path):
    db = _stored(tmp_path, VALID, "ort-cpu", verdict="drift")
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("model.onnx", "repro.py", "ISSUE.md", "expected.npy"):
        (mine / name).write_text(f"the user's own {name}\n")
    before = snapshot(mine)
    _one_line_usage_error(_repro_cli(db, VALID, mine), "no deploykit repro bundle")
    assert snapshot(mine) == before and not _leftovers(tmp_path)


@pytest.mark.slow
def test_a_symlink_target_is_refused_and_not_followed(tmp_path):
    db = _stored(tmp_path, VALID, "ort-cpu", verdict="drift")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(elsewhere, target_is_directory=True)
    _one_line_usage_error(_repro_cli(db, VALID, tmp_path / "link"), "is a symbolic link")
    assert not any(elsewhere.iterdir())


@pytest.mark.slow
def test_a_symlink_inside_a_previous_bundle_is_not_followed(tmp_path):
    db = _stored(tmp_path, VALID, "ort-cpu", verdict="drift")
    write_bundle(db, VALID.id, "ort-cpu", tmp_path / "bundle")
    outside = tmp_path / "precious.npy"
    outside.write_text("the user's file outside the folder\n")
    (tmp_path / "bundle" / "expected.npy").unlink()
    (tmp_path / "bundle" / "expected.npy").symlink_to(outside)
    _one_line_usage_error(_repro_cli(db, VALID, tmp_path / "bundle"), "expected.npy is no longer the file deploykit wrote")
    assert outside.read_text() == "the user's file outside the folder\n"


@pytest.mark.parametrize("change, message", [
    (lambda folder: (folder / "ISSUE.md").write_text("my notes for the upstream report\n"), "ISSUE.md was changed"),
    (lambda folder: (folder / "notes.txt").write_text("mine\n"), r"did not write \(notes\.txt\)"),
])
def test_a_previous_bundle_the_user_changed_is_kept(tmp_path, change, message):
    db = _stored(tmp_path, VALID, "ort-cpu", verdict="drift")
    write_bundle(db, VALID.id, "ort-cpu", tmp_path / "bundle")
    change(tmp_path / "bundle")
    before = snapshot(tmp_path / "bundle")
    with pytest.raises(UsageError, match=message):
        write_bundle(db, VALID.id, "ort-cpu", tmp_path / "bundle")
    assert snapshot(tmp_path / "bundle") == before


def test_a_previous_bundle_of_the_same_result_is_replaced_whole(tmp_path):
    """The same result judged by a later run with --atol/--rtol: bound.npy goes, the folder keeps its permissions."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_bundle(_stored(tmp_path / "a", VALID, "ort-cpu", verdict="drift"), VALID.id, "ort-cpu", tmp_path / "bundle")
    (tmp_path / "bundle").chmod(0o750)
    tolerance_run = _stored(tmp_path / "b", VALID, "ort-cpu", verdict="drift", parameters={"tolerance": {"atol": 0.0, "rtol": 0.0}})
    bundle = write_bundle(tolerance_run, VALID.id, "ort-cpu", tmp_path / "bundle")
    names = {p.name for p in (tmp_path / "bundle").iterdir()}
    assert names == {*bundle.files, "deploykit-repro.json"} and "bound.npy" not in names
    marker = json.loads((tmp_path / "bundle" / "deploykit-repro.json").read_text())
    assert marker["config_id"] == VALID.id and marker["details"]["criterion"] == {"kind": "tolerance", "atol": 0.0, "rtol": 0.0}
    assert stat.S_IMODE((tmp_path / "bundle").stat().st_mode) == 0o750 and not _leftovers(tmp_path)


def test_an_empty_folder_takes_the_bundle(tmp_path):
    (tmp_path / "empty").mkdir()
    bundle = write_bundle(_stored(tmp_path, VALID, "ort-cpu", verdict="drift"), VALID.id, "ort-cpu", tmp_path / "empty")
    assert {p.name for p in (tmp_path / "empty").iterdir()} == {*bundle.files, "deploykit-repro.json"}


def test_a_write_failing_half_way_leaves_the_previous_bundle(tmp_path, monkeypatch):
    db = _stored(tmp_path, VALID, "ort-cpu", verdict="drift")
    write_bundle(db, VALID.id, "ort-cpu", tmp_path / "bundle")
    before = snapshot(tmp_path / "bundle")
    real_save = np.save

    def disk_full_at_expected(path, array):
        if Path(path).name == "expected.npy":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(path, array)

    monkeypatch.setattr(np, "save", disk_full_at_expected)
    with pytest.raises(UsageError, match="No space left on device.*unchanged"):
        write_bundle(db, VALID.id, "ort-cpu", tmp_path / "bundle")
    assert snapshot(tmp_path / "bundle") == before and not _leftovers(tmp_path)


@pytest.mark.slow
def test_a_file_size_limit_half_way_leaves_the_previous_bundle(tmp_path):
    """`ulimit -f`: X.npy and W.npy fit, repro.py does not."""
    db = _stored(tmp_path, VALID, "ort-cpu", verdict="drift")
    write_bundle(db, VALID.id, "ort-cpu", tmp_path / "bundle")
    before = snapshot(tmp_path / "bundle")
    _one_line_usage_error(_repro_cli(db, VALID, tmp_path / "bundle", limit_file_size=1024), "cannot write")
    assert snapshot(tmp_path / "bundle") == before and not _leftovers(tmp_path)


# ----- the criterion: a bundle judges as its run did ------------------------------------------------------------------

@pytest.mark.slow
def test_a_run_judged_with_atol_0_gives_a_bundle_that_exits_1(tmp_path):
    """A float32 result is never exactly the float64 answer: with --atol 0 --rtol 0 it is `drift`, and the
    bundle's repro.py must say so too (it used to judge with the bound, print "fixed" and exit 0)."""
    spec = ConvTransposeSpec(input_shape=(1, 2, 5), out_channels=2, kernel_shape=(3,), strides=(2,))
    (tmp_path / "m.yaml").write_text(f"cases:\n  - {json.dumps({**spec.to_dict(), 'name': 'tiny'})}\n")
    run = subprocess.run([sys.executable, "-m", "deploykit", "conformance", "run", "--matrix", "m.yaml", "--backends", "ort-cpu",
                          "--atol", "0", "--rtol", "0", "--db", "r.db"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "1 new findings" in run.stdout, run.stdout + run.stderr
    done = subprocess.run([sys.executable, "-m", "deploykit", "repro", "--db", "r.db", "--config", "tiny", "--backend", "ort-cpu",
                           "-o", "bundle"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    script = _run_script(tmp_path / "bundle")
    assert script.returncode == 1 and "exceed atol=0 rtol=0" in script.stdout, script.stdout + script.stderr
    assert not (tmp_path / "bundle" / "bound.npy").exists()
    issue = (tmp_path / "bundle" / "ISSUE.md").read_text()
    assert "by more than atol=0 rtol=0" in issue.splitlines()[0]
    assert "within that rounding-error bound" in issue and "no error" in issue  # ort computes it right: no upstream bug


@pytest.mark.slow
def test_a_pass_under_a_generous_tolerance_is_not_bundled(tmp_path):
    """A result beyond the rounding-error bound passes a run with --atol 1e9: repro has nothing to reproduce."""
    from deploykit.op.judging import Tolerance

    result = Executor(tolerance=Tolerance(1e9, 0.0)).run(VALID, "ort-cpu")
    assert result.verdict == "pass"
    db = tmp_path / "r.db"
    store = Store(db)
    run_id = store.start_run("test", {"tolerance": {"atol": 1e9, "rtol": 0.0}}, {}, 1, None)
    store.add(run_id, result)
    store.close()
    _one_line_usage_error(_repro_cli(db, VALID, tmp_path / "out"), "nothing to reproduce")
    assert not (tmp_path / "out").exists()


def test_a_run_judged_with_another_summation_model_is_refused(tmp_path):
    db = _stored(tmp_path, VALID, "ort-cpu", verdict="drift")
    store = Store(db)
    [result] = store.results(1)
    store.db.execute("UPDATE results SET accumulation='float16 sum per kernel tap'")
    store.close()
    assert result.accumulation  # the run recorded one
    with pytest.raises(UsageError, match="with the summation model 'float16 sum per kernel tap'"):
        write_bundle(db, VALID.id, "ort-cpu", tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_a_tolerance_repro_cannot_read_is_refused(tmp_path):
    db = _stored(tmp_path, VALID, "ort-cpu", verdict="drift", parameters={"tolerance": {"atol": "loose"}})
    with pytest.raises(UsageError, match="stores a tolerance repro cannot use"):
        write_bundle(db, VALID.id, "ort-cpu", tmp_path / "bundle")
