"""`deploykit conformance judge` and `generate --trtexec`: outputs made elsewhere, judged as a run's.

Answers are written here the way runtimes and trtexec write them; a stand-in trtexec
(tests/fake_trtexec.py) runs the generated script end to end.  No real TensorRT is involved.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from helpers import TESTS, deploykit
from onnx import numpy_helper

from deploykit import backends as registry
from deploykit.backends.base import BuildConfig
from deploykit.cli import main
from deploykit.conformance.judge import JudgeRequest, judge
from deploykit.onnxio.write import NUMPY_DTYPES
from deploykit.op.bound import describe
from deploykit.op.spec import ConvTransposeSpec
from deploykit.results import divergences

SMALL = """
name: judge-small
defaults: {dtype: float32, opset: 17, bias: true}
cases:
  - {name: f32, input_shape: [1, 8, 5, 5], out_channels: 4, kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1]}
  - {name: f16, input_shape: [1, 8, 5, 5], out_channels: 4, kernel_shape: [3, 3], strides: [2, 2], dtype: float16}
  - {name: bf16, input_shape: [1, 4, 5, 5], out_channels: 4, kernel_shape: [3, 3], strides: [2, 2], dtype: bfloat16, opset: 22}
  - {name: op-below-dilation, input_shape: [1, 4, 5, 5], out_channels: 3, kernel_shape: [3, 3], dilations: [2, 2],
     output_padding: [1, 1]}
  - {name: wai, input_shape: [1, 3, 4, 4], out_channels: 2, kernel_shape: [3, 3], strides: [2, 2], weights_as_inputs: true}
  - {name: neg-group, input_shape: [1, 4, 4, 4], out_channels: 3, kernel_shape: [3, 3], group: 3, expect: reject}
"""
ORT_REFUSAL = ("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running ConvTranspose node."
               " Name:'ConvTranspose_x' Status Message: Computed output shape is inconsistent with input spatial dimensions."
               " output_padding (1) may be too large for stride (1).")


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The command line in this process (fast): exit code, stdout, stderr."""
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    (folder / "small.yaml").write_text(SMALL)
    proc = deploykit("generate", "--matrix", str(folder / "small.yaml"), "--out", str(folder / "tree"), "--trtexec")
    assert proc.returncode == 0, proc.stderr
    return folder / "tree"


@pytest.fixture
def tree(small_tree, tmp_path) -> Path:
    """A fresh copy of the small tree, with no answers yet."""
    return Path(shutil.copytree(small_tree, tmp_path / "tree"))


def case(tree: Path, name: str) -> Path:
    """A case's test_data_set_0 folder, by the config's name."""
    return next(tree.glob(f"test_deploykit_{name}_*")) / "test_data_set_0"


def reference(data: Path) -> np.ndarray:
    """The tree's own reference output, in the model's type (what a right runtime returns)."""
    return numpy_helper.to_array(onnx.load_tensor(str(data / "output_0.pb")))


def answer_with_references(tree: Path, refuse: tuple[str, ...] = ("neg-group",)) -> None:
    """Every case answered right: its reference as actual_0.pb, a refusal for `refuse`."""
    for data in tree.glob("*/test_data_set_0"):
        name = data.parent.name.removeprefix("test_deploykit_").rsplit("_", 1)[0]
        if name in refuse:
            (data / "error.txt").write_text("the model is invalid\n")
        else:
            shutil.copy(data / "output_0.pb", data / "actual_0.pb")


def trtexec_json(path: Path, values: np.ndarray, name: str = "Y", digits: int = 6, dims: str | None = None) -> None:
    """trtexec's --exportOutput layout, values as a C++ stream prints float(v) at `digits` digits."""
    text = ", ".join(format(float(v), f".{digits}g") for v in values.reshape(-1))
    dims = dims or "x".join(map(str, values.shape))
    path.write_text(f'[\n  {{ "name" : "{name}"\n  , "dimensions" : "{dims}"\n  , "values" : [ {text} ]\n  }}\n]\n')


def results(db: Path) -> dict[str, dict]:
    report = json.loads(deploykit("conformance", "report", "--db", str(db), "--format", "json").stdout)
    return {r["label"]: r for r in report["results"]}


# --- the answer formats --------------------------------------------------------------------------


@pytest.mark.slow
def test_pb_answers_make_a_stored_run_with_the_version_given(tree, tmp_path, capsys):
    answer_with_references(tree)
    db, out = tmp_path / "j.db", tmp_path / "j.json"
    code, stdout, err = cli(capsys, "conformance", "judge", str(tree), "--as", "tensorrt", "--version", "10.8.0",
                            "--db", str(db), "--json", str(out))
    assert code == 0, stdout + err
    report = json.loads(out.read_text())
    assert report["run"]["complete"] and report["run"]["recorded"] == report["run"]["planned"] == 6
    rows = {r["label"]: r for r in report["results"]}
    assert {r["verdict"] for r in rows.values()} == {"pass"}
    assert {r["backend"] for r in rows.values()} == {"tensorrt"} and {r["backend_version"] for r in rows.values()} == {"10.8.0"}
    assert rows["neg-group"]["reason"].startswith("refused the spec-invalid model: the model is invalid")
    assert rows["f32"]["accumulation"] == "one float32 sum" and rows["f32"]["bound_ratio"] <= 1
    assert "6 results judged from" in stdout and "0 new findings" in stdout


def test_the_precision_picks_the_accumulation_model(tree, tmp_path, capsys):
    answer_with_references(tree)
    code, stdout, err = cli(capsys, "conformance", "judge", str(tree), "--as", "tensorrt", "--precision", "fp16",
                            "--db", str(tmp_path / "p.db"))
    assert code == 0, stdout + err
    rows = results(tmp_path / "p.db")
    assert {r["precision"] for r in rows.values()} == {"fp16"}
    assert rows["f32"]["accumulation"] == describe(registry.get("tensorrt").accumulation("float32", BuildConfig("fp16")))
    assert "float16" in rows["f32"]["accumulation"]


@pytest.mark.slow
def test_npy_answers_take_bfloat16_as_numpy_saves_it_and_as_float32(tree, tmp_path, capsys):
    answer_with_references(tree)
    bf16 = case(tree, "bf16")
    (bf16 / "actual_0.pb").unlink()
    np.save(bf16 / "actual_0.npy", reference(bf16))  # NumPy writes ml_dtypes' bfloat16 as 2-byte voids
    assert np.load(bf16 / "actual_0.npy").dtype.kind == "V"
    f32 = case(tree, "f32")
    (f32 / "actual_0.pb").unlink()
    np.save(f32 / "actual_0.npy", reference(f32))
    code, stdout, err = cli(capsys, "conformance", "judge", str(tree), "--as", "tensorrt", "--db", str(tmp_path / "a.db"))
    assert code == 0, stdout + err
    np.save(bf16 / "actual_0.npy", reference(bf16).astype(np.float32))  # as runtimes export bfloat16
    code, stdout, err = cli(capsys, "conformance", "judge", str(tree), "--as", "tensorrt", "--db", str(tmp_path / "b.db"))
    assert code == 0, stdout + err
    assert {r["verdict"] for r in results(tmp_path / "b.db").values()} == {"pass"}


@pytest.mark.slow
def test_trtexec_json_float32_at_six_digits_passes_and_a_wrong_value_still_fails(tree, tmp_path, capsys):
    answer_with_references(tree)
    f32, f16, bf16 = case(tree, "f32"), case(tree, "f16"), case(tree, "bf16")
    for data in (f32, f16, bf16):
        (data / "actual_0.pb").unlink()
        trtexec_json(data / "actual.json", reference(data))
    db = tmp_path / "right.db"
    code, stdout, err = cli(capsys, "conformance", "judge", str(tree), "--as", "tensorrt", "--db", str(db))
    assert code == 0, stdout + err
    rows = results(db)
    assert "6-digit decimal text (float32 needs 9)" in rows["f32"]["accumulation"]
    # float16 and bfloat16 come back exactly from 6 digits: judged with the bare bound
    assert "decimal" not in rows["f16"]["accumulation"] and "decimal" not in rows["bf16"]["accumulation"]
    assert rows["f32"]["verdict"] == rows["f16"]["verdict"] == rows["bf16"]["verdict"] == "pass"
    wrong = reference(f32).astype(np.float64)
    wrong[0, 1, 2, 3] *= 1.0005  # well beyond six digits' rounding and the bound
    trtexec_json(f32 / "actual.json", wrong)
    db = tmp_path / "wrong.db"
    code, stdout, err = cli(capsys, "conformance", "judge", str(tree), "--as", "tensorrt", "--db", str(db))
    assert code == 1, stdout + err
    row = results(db)["f32"]
    assert row["verdict"] == "drift" and "[0, 1, 2, 3]" in row["reason"] and "6-digit decimal text" in row["reason"]


@pytest.mark.slow
def test_trtexec_json_prints_of_nan_and_inf_are_nonfinite(tree, tmp_path, capsys):
    answer_with_references(tree)
    f32 = case(tree, "f32")
    (f32 / "actual_0.pb").unlink()
    values = reference(f32)
    trtexec_json(f32 / "actual.json", values)
    printed = ", ".join(format(float(v), ".6g") for v in values.reshape(-1))
    text = (f32 / "actual.json").read_text()
    (f32 / "actual.json").write_text(text.replace(printed, "-nan, -inf, " + printed.split(", ", 2)[2]))  # as C++ prints them
    code, stdout, err = cli(capsys, "conformance", "judge", str(tree), "--as", "tensorrt", "--db", str(tmp_path / "n.db"))
    assert code == 1, stdout + err
    row = results(tmp_path / "n.db")["f32"]
    assert row["verdict"] == "nonfinite" and row["reason"].startswith("2 of ")


def test_a_wrong_shape_is_a_shape_mismatch(tree, tmp_path, capsys):
    answer_with_references(tree)
    f32, f16 = case(tree, "f32"), case(tree, "f16")
    (f32 / "actual_0.pb").unlink()
    smaller = reference(f32)[:, :, :-1, :-1]
    trtexec_json(f32 / "actual.json", smaller)
    (f16 / "actual_0.pb").unlink()
    np.save(f16 / "actual_0.npy", reference(f16)[:, :2])
    code, stdout, err = cli(capsys, "conformance", "judge", str(tree), "--as", "tensorrt", "--db", str(tmp_path / "s.db"))
    assert code == 1, stdout + err
    rows = results(tmp_path / "s.db")
    assert rows["f32"]["verdict"] == rows["f16"]["verdict"] == "shape-mismatch"
    assert rows["f32"]["actual_shape"] == list(smaller.shape)


# --- refusals and the known-divergence table -----------------------------------------------------


@pytest.mark.slow
def test_a_refusal_is_classified_against_the_known_divergence_table(tree, tmp_path, capsys):
    answer_with_references(tree, refuse=("neg-group", "op-below-dilation", "bf16"))
    (case(tree, "op-below-dilation") / "error.txt").write_text(ORT_REFUSAL + "\n")
    db = tmp_path / "k.db"
    code, stdout, err = cli(capsys, "conformance", "judge", str(tree), "--as", "ort-cpu", "--db", str(db))
    assert code == 0, stdout + err
    rows = results(db)
    known = rows["op-below-dilation"]
    assert known["verdict"] == "rejected" and known["known_divergence"] == "ort-output-padding-ge-stride"
    assert known["reason"].startswith("Computed output shape is inconsistent")  # worded as in a run
    # a refusal of what the backend declares it cannot run is `unsupported`, as a run records it
    assert rows["bf16"]["verdict"] == "unsupported" and "no bfloat16 ConvTranspose kernel" in rows["bf16"]["reason"]
    assert rows["neg-group"]["verdict"] == "pass"


@pytest.mark.slow
def test_an_unknown_refusal_is_a_new_finding(tree, tmp_path, capsys):
    answer_with_references(tree, refuse=("neg-group", "f32"))
    (case(tree, "f32") / "error.txt").write_text("[12/04/2025-10:00:00] [E] Error[10]: Could not find any implementation\n"
                                                 "[12/04/2025-10:00:00] [E] Engine could not be created\n")
    code, stdout, err = cli(capsys, "conformance", "judge", str(tree), "--as", "tensorrt", "--db", str(tmp_path / "u.db"))
    assert code == 1, stdout + err
    row = results(tmp_path / "u.db")["f32"]
    assert row["verdict"] == "rejected" and row["known_divergence"] is None
    assert row["reason"] == "[E] Error[10]: Could not find any implementation [E] Engine could not be created"
    assert "1 new findings" in stdout


def test_version_ranged_entries_match_the_version_given(tree, tmp_path, monkeypatch):
    answer_with_references(tree, refuse=("neg-group", "op-below-dilation"))
    table = [divergences.Divergence(id="trt-output-padding", backends=("tensorrt",), hazard="output_padding_ge_stride",
                                    verdicts=("rejected",), reason="seen in 10.0 to 10.8", versions=">=10.0,<10.9")]
    monkeypatch.setattr(divergences, "load", lambda *args: table)
    known = {}
    for version in ("10.8.1", "10.9.0", None):
        outcome = judge(JudgeRequest(tree, "tensorrt", version=version, db=tmp_path / f"{version}.db"))
        row = next(r for r in outcome.results if r.label == "op-below-dilation")
        assert row.verdict == "rejected" and row.backend_version == version
        known[version] = row.known_divergence
    # a fixed release makes it a finding again; an unknown version matches no ranged entry
    assert known == {"10.8.1": "trt-output-padding", "10.9.0": None, None: None}


# --- what is refused in one line ---------------------------------------------------------------


def _write(data: Path, name: str, content) -> None:
    (data / "actual_0.pb").unlink(missing_ok=True)
    path = data / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_text(content)


MALFORMED = {
    "json-not-json": ("f32", "actual.json", '[ { "name" : "Y"', ["actual.json", "not trtexec's --exportOutput JSON"]),
    "json-no-entry": ("f32", "actual.json", '[ { "name" : "Z", "dimensions" : "1", "values" : [ 1 ] } ]',
                      ["no entry for the model's output 'Y'", "'Z'"]),
    "json-count": ("f32", "actual.json", '[ { "name" : "Y", "dimensions" : "1x4x9x9", "values" : [ 1, 2 ] } ]',
                   ["has 2 values for dimensions 1x4x9x9 (324 expected)"]),
    "json-dimensions": ("f32", "actual.json", '[ { "name" : "Y", "dimensions" : "(1, 4)", "values" : [ 1 ] } ]',
                        ["\"dimensions\" must be a string such as"]),
    "json-not-a-list": ("f32", "actual.json", '{"Y": [1, 2]}', ["not trtexec's --exportOutput JSON"]),
    "npy-garbage": ("f32", "actual_0.npy", b"\x93NUMPY garbage", ["actual_0.npy: not a NumPy .npy array"]),
    "npy-ints": ("f32", "actual_0.npy", np.zeros((1, 4, 9, 9), np.int32), ["holds int32 values; the model's output is float32"]),
    "npy-narrower": ("f32", "actual_0.npy", np.zeros((1, 4, 9, 9), np.float16), ["holds float16 values"]),
    "npy-not-bf16": ("bf16", "actual_0.npy", np.full((1, 4, 9, 9), 1.0001, np.float32),
                     ["holds float32 values that are not bfloat16 numbers"]),
    "pb-garbage": ("f32", "actual_0.pb", b"not a tensor at all", ["actual_0.pb: not a TensorProto"]),
    "pb-empty": ("f32", "actual_0.pb", b"", ["actual_0.pb: not a TensorProto"]),
    "error-empty": ("f32", "error.txt", "  \n", ["error.txt is empty"]),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_answer_is_one_line_and_writes_nothing(tree, tmp_path, capsys, name):
    answer_with_references(tree)
    config, filename, content, needles = MALFORMED[name]
    _write(case(tree, config), filename, content)
    db = tmp_path / "m.db"
    code, _, err = cli(capsys, "conformance", "judge", str(tree), "--as", "tensorrt", "--db", str(db))
    one_line_error(code, err, *needles)
    assert not db.exists()


def test_refused_trees_and_options_are_one_line(tree, tmp_path, capsys):
    answer_with_references(tree)
    db = str(tmp_path / "o.db")
    judge_args = ("conformance", "judge", str(tree), "--db", db)
    one_line_error(*cli(capsys, "conformance", "judge", str(tmp_path / "nowhere"), "--as", "tensorrt", "--db", db)[::2],
                   "is not a folder")
    (tmp_path / "empty").mkdir()
    one_line_error(*cli(capsys, "conformance", "judge", str(tmp_path / "empty"), "--as", "tensorrt", "--db", db)[::2],
                   "not a tree written by `deploykit generate`")
    one_line_error(*cli(capsys, *judge_args, "--as", "nosuch")[::2], "unknown backend 'nosuch'")
    one_line_error(*cli(capsys, *judge_args, "--as", "ort-cpu", "--precision", "fp16")[::2],
                   "ort-cpu has no such build precision (it offers fp32)")
    f16 = case(tree, "f16")
    shutil.copy(f16 / "actual_0.pb", f16 / "error.txt")
    one_line_error(*cli(capsys, *judge_args, "--as", "tensorrt")[::2], "holds 2 answers (actual_0.pb, error.txt)")
    (f16 / "error.txt").unlink()
    meta = json.loads((f16.parent / "deploykit.json").read_text())
    (f16.parent / "deploykit.json").write_text(json.dumps({**meta, "out_channels": 5}))
    one_line_error(*cli(capsys, *judge_args, "--as", "tensorrt")[::2], "deploykit.json: its config has id")
    (f16.parent / "deploykit.json").write_text(json.dumps(meta))
    x = numpy_helper.to_array(onnx.load_tensor(str(f16 / "input_0.pb")))
    (f16 / "input_0.pb").write_bytes(numpy_helper.from_array(x * 2, "X").SerializeToString())
    one_line_error(*cli(capsys, *judge_args, "--as", "tensorrt")[::2], "its X is not the one deploykit draws")
    (f16 / "input_0.pb").unlink()
    (f16 / "actual_0.pb").unlink()
    answerless = tmp_path / "answerless"
    shutil.copytree(tree, answerless)
    for path in answerless.glob("*/test_data_set_0/*"):
        if path.name in ("actual_0.pb", "error.txt"):
            path.unlink()
    one_line_error(*cli(capsys, "conformance", "judge", str(answerless), "--as", "tensorrt", "--db", db)[::2],
                   "no case in", "has an answer")
    assert not Path(db).exists()


@pytest.mark.parametrize("name, expect, needle", [
    ("neg-group", "accept", "its config is invalid (group=3 does not divide in_channels=4) but says expect: accept"),
    ("f32", "reject", "its config is valid but says expect: reject"),
])
def test_a_config_whose_expect_was_edited_is_one_line(tree, tmp_path, capsys, name, expect, needle):
    """An invalid config said to be accepted has no reference to judge against: refused, not a crash."""
    answer_with_references(tree)
    path = case(tree, name).parent / "deploykit.json"
    meta = json.loads(path.read_text())
    edited = {k: v for k, v in meta.items() if k not in ("id", "label", "expected_shape", "onnx_inferred_shape", "violations",
                                                            "onnx_check")}
    edited["expect"] = expect
    path.write_text(json.dumps({**meta, "expect": expect, "id": ConvTransposeSpec.from_dict(edited).id}))
    db = tmp_path / "e.db"
    code, _, err = cli(capsys, "conformance", "judge", str(tree), "--as", "ort-cpu", "--db", str(db))
    one_line_error(code, err, "deploykit.json: " + needle, "regenerate the tree")
    assert not db.exists()


@pytest.mark.slow
def test_missing_answers_leave_an_incomplete_run(tree, tmp_path, capsys):
    answer_with_references(tree)
    (case(tree, "f16") / "actual_0.pb").unlink()
    (case(tree, "wai") / "actual_0.pb").unlink()
    db = tmp_path / "i.db"
    code, stdout, err = cli(capsys, "conformance", "judge", str(tree), "--as", "tensorrt", "--db", str(db))
    one_line_error(code, err, "is incomplete: 2 of 6 cases have no answer (test_deploykit_f16_")
    assert "4 results judged" in stdout
    report = deploykit("conformance", "report", "--db", str(db))
    assert report.returncode == 0 and "INCOMPLETE: run 1 judged 4 of 6 cases" in report.stdout
    resume = deploykit("conformance", "run", "--resume", "--backends", "ort-cpu", "--db", str(db))
    assert resume.returncode == 2 and "judged outputs made elsewhere" in resume.stderr


# --- a judged run is a run ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_judged_run_reports_compares_and_merges(tree, tmp_path, capsys):
    answer_with_references(tree)
    shards = []
    for index in (1, 2):
        shards.append(tmp_path / f"shard{index}.db")
        code, stdout, err = cli(capsys, "conformance", "judge", str(tree), "--as", "tensorrt", "--shard", f"{index}/2",
                                "--db", str(shards[-1]))
        assert code == 0, stdout + err
    sizes = [len(results(path)) for path in shards]
    assert sum(sizes) == 6 and 0 < min(sizes)  # the split `conformance run --shard` makes
    merged = tmp_path / "all.db"
    code, stdout, err = cli(capsys, "conformance", "merge", *map(str, shards), "-o", str(merged))
    assert code == 0 and "6 results" in stdout, stdout + err
    for fmt, needle in (("table", "Verdicts per backend"), ("md", "✅"), ("junit", 'failures="0"'), ("html", "<html")):
        code, stdout, err = cli(capsys, "conformance", "report", "--db", str(merged), "--format", fmt)
        assert code == 0 and needle in stdout and "INCOMPLETE" not in stdout, (fmt, stdout[:300], err)
    f32 = case(tree, "f32")
    (f32 / "actual_0.pb").unlink()
    wrong = reference(f32).astype(np.float64) + 0.01
    trtexec_json(f32 / "actual.json", wrong)
    worse = tmp_path / "worse.db"
    assert cli(capsys, "conformance", "judge", str(tree), "--as", "tensorrt", "--db", str(worse))[0] == 1
    code, stdout, err = cli(capsys, "conformance", "compare", "--baseline", str(merged), "--db", str(worse))
    assert code == 1 and "f32" in stdout and "drift" in stdout, stdout + err
    code, stdout, err = cli(capsys, "conformance", "compare", "--baseline", str(merged), "--db", str(merged))
    assert code == 0, stdout + err


def _ort_answers(tree: Path) -> None:
    """What a user running ONNX Runtime on the tree by hand writes: its output, or its error."""
    import onnxruntime as ort

    for data in sorted(tree.glob("*/test_data_set_0")):
        feeds = {}
        for path in sorted(data.glob("input_*.pb")):
            tensor = onnx.load_tensor(str(path))
            feeds[tensor.name] = numpy_helper.to_array(tensor)
        try:
            session = ort.InferenceSession(str(data.parent / "model.onnx"), providers=["CPUExecutionProvider"])
            np.save(data / "actual_0.npy", session.run(None, feeds)[0])
        except Exception as error:  # noqa: BLE001 - the refusal is the answer
            (data / "error.txt").write_text(str(error))


@pytest.mark.slow
def test_judging_ort_outputs_gives_the_verdicts_of_a_run(tmp_path):
    """The strong check: the smoke matrix run on ort-cpu, and the same configs generated, run by
    hand with ONNX Runtime and judged, give the same verdicts, known divergences and figures."""
    pytest.importorskip("onnxruntime")
    run = deploykit("conformance", "run", "--matrix", "smoke", "--backends", "ort-cpu", "--db", "r.db", "--json", "r.json",
                    cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert deploykit("generate", "--matrix", "smoke", "--out", "tree", cwd=tmp_path).returncode == 0
    _ort_answers(tmp_path / "tree")
    judged = deploykit("conformance", "judge", "tree", "--as", "ort-cpu", "--db", "j.db", "--json", "j.json", cwd=tmp_path)
    assert judged.returncode == 0, judged.stdout + judged.stderr
    ran = {(r["config_id"], r["expect"]): r for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    got = {(r["config_id"], r["expect"]): r for r in json.loads((tmp_path / "j.json").read_text())["results"]}
    assert got.keys() == ran.keys() and len(got) == 31
    for key, expected in ran.items():
        for name in ("verdict", "known_divergence", "bound_ratio", "max_ulp_err", "actual_shape", "accumulation"):
            assert got[key][name] == expected[name], (expected["label"], name, got[key][name], expected[name])
    assert {r["verdict"] for r in got.values()} >= {"pass", "rejected", "shape-mismatch", "unsupported"}


# --- generate --trtexec --------------------------------------------------------------------------


def test_generate_trtexec_writes_each_input_as_raw_bytes(small_tree):
    for data in small_tree.glob("*/test_data_set_0"):
        pbs = [onnx.load_tensor(str(path)) for path in sorted(data.glob("input_*.pb"))]
        assert sorted(p.name for p in data.glob("*.bin")) == sorted(f"{t.name}.bin" for t in pbs)
        for tensor in pbs:
            array = numpy_helper.to_array(tensor)
            raw = (data / f"{tensor.name}.bin").read_bytes()
            assert len(raw) == array.size * array.dtype.itemsize
            assert np.array_equal(np.frombuffer(raw, array.dtype).reshape(array.shape), array)
    bf16 = case(small_tree, "bf16")
    x = numpy_helper.to_array(onnx.load_tensor(str(bf16 / "input_0.pb")))
    assert x.dtype == ml_dtypes.bfloat16 and (bf16 / "X.bin").read_bytes() == x.view(np.uint16).astype("<u2").tobytes()
    assert sorted(p.name for p in case(small_tree, "wai").glob("*.bin")) == ["B.bin", "W.bin", "X.bin"]


def _script_lines(tree: Path) -> dict[str, str]:
    lines = [line for line in (tree / "trtexec.sh").read_text().splitlines() if line.startswith("run_case ")]
    return {line.split()[1].removeprefix("test_deploykit_").rsplit("_", 1)[0]: line for line in lines}


def test_trtexec_script_flags_follow_the_precision(small_tree, tmp_path):
    lines = _script_lines(small_tree)
    assert len(lines) == 6
    f32 = lines["f32"]
    folder = f32.split()[1]
    assert f32 == f"run_case {folder} --loadInputs=X:{folder}/test_data_set_0/X.bin --noTF32"
    assert lines["f16"].endswith("--stronglyTyped --noTF32") and lines["bf16"].endswith("--stronglyTyped --noTF32")
    wai = lines["wai"].split()[1] + "/test_data_set_0"
    assert f"--loadInputs=X:{wai}/X.bin,W:{wai}/W.bin,B:{wai}/B.bin" in lines["wai"]
    assert subprocess.run(["bash", "-n", str(small_tree / "trtexec.sh")], check=False).returncode == 0
    (tmp_path / "small.yaml").write_text(SMALL)
    proc = deploykit("generate", "--matrix", str(tmp_path / "small.yaml"), "--out", str(tmp_path / "fp16 tree"), "--trtexec",
                     "--precision", "fp16", "--dynamic-batch")
    assert proc.returncode == 0, proc.stderr
    lines = _script_lines(tmp_path / "fp16 tree")
    assert lines["f32"].endswith("--shapes=X:1x8x5x5 --noTF32 --fp16")
    # a float16/bfloat16 model is built strongly typed: its own types, no precision flags
    assert lines["f16"].endswith("--shapes=X:1x8x5x5 --stronglyTyped --noTF32")


def test_generate_trtexec_never_replaces_a_users_script(tmp_path, capsys):
    (tmp_path / "small.yaml").write_text(SMALL)
    out = tmp_path / "out"
    out.mkdir()
    (out / "trtexec.sh").write_text("my own script\n")
    code, stdout, err = cli(capsys, "generate", "--matrix", str(tmp_path / "small.yaml"), "--out", str(out), "--trtexec")
    one_line_error(code, err, "trtexec.sh exists and was not written by `deploykit generate --trtexec`")
    assert (out / "trtexec.sh").read_text() == "my own script\n" and not list(out.glob("test_*"))
    code, _, err = cli(capsys, "generate", "--matrix", str(tmp_path / "small.yaml"), "--out", str(out), "--precision", "fp16")
    one_line_error(code, err, "give it with --trtexec")


@pytest.fixture
def fake_trtexec(tmp_path) -> dict:
    """An environment whose PATH has tests/fake_trtexec.py as `trtexec`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "trtexec"
    tool.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{TESTS / "fake_trtexec.py"}" "$@"\n')
    tool.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.slow
def test_the_trtexec_script_round_trips_through_a_fake_trtexec(tree, tmp_path, fake_trtexec, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(["bash", str(tree / "trtexec.sh")], cwd=elsewhere, env=fake_trtexec, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ran 6 case(s), 0 without an answer" in proc.stdout
    assert (case(tree, "neg-group") / "error.txt").read_text().startswith("[12/04/2025-10:00:00] [E] [TRT]")
    assert "--noTF32 --exportOutput=" in (case(tree, "f32") / "trtexec.log").read_text()
    db = tmp_path / "t.db"
    code, stdout, err = cli(capsys, "conformance", "judge", str(tree), "--as", "tensorrt", "--db", str(db))
    assert code == 0, stdout + err
    rows = results(db)
    assert {r["verdict"] for r in rows.values()} == {"pass"}
    assert "decimal" in rows["f32"]["accumulation"] and "decimal" in rows["wai"]["accumulation"]
    assert "decimal" not in rows["bf16"]["accumulation"]


@pytest.mark.slow
def test_the_trtexec_script_leaves_no_answer_where_trtexec_dies_or_is_missing(tree, tmp_path, fake_trtexec, capsys):
    proc = subprocess.run(["bash", "trtexec.sh"], cwd=tree, env={**fake_trtexec, "FAKE_TRTEXEC_DIE": "_f16_"},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "no answer for test_deploykit_f16_" in proc.stderr, proc.stdout + proc.stderr
    assert not [p for p in case(tree, "f16").iterdir() if p.name in ("actual.json", "error.txt")]
    code, _, err = cli(capsys, "conformance", "judge", str(tree), "--as", "tensorrt", "--db", str(tmp_path / "d.db"))
    one_line_error(code, err, "1 of 6 cases have no answer (test_deploykit_f16_")
    missing = subprocess.run(["bash", "trtexec.sh"], cwd=tree, env={**os.environ, "TRTEXEC": str(tmp_path / "nosuch")},
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "not found" in missing.stderr
    assert (case(tree, "f32") / "actual.json").exists()  # what the last run wrote stays


def test_decimal_digits_are_read_from_the_text():
    from deploykit.conformance.answers import _half_unit, _significant_digits

    assert [_significant_digits(Decimal(t)) for t in ("0.5", "1.23457e+08", "-0.000123457", "100", "0")] == [1, 6, 6, 1, 1]
    assert _half_unit(Decimal("1.23457e+08"), 6) >= 500.0 and _half_unit(Decimal("0"), 6) == 0.0
    assert _half_unit(Decimal("-0.000123457"), 6) >= 5e-10


def test_float_types_need_these_digits():
    from deploykit.conformance.answers import ROUND_TRIP_DIGITS

    for dtype, digits in ROUND_TRIP_DIGITS.items():
        values = np.random.default_rng(0).standard_normal(2000).astype(NUMPY_DTYPES[dtype])
        back = np.array([float(format(float(v), f".{digits}g")) for v in values]).astype(NUMPY_DTYPES[dtype])
        assert np.array_equal(back, values), dtype
        fewer = np.array([float(format(float(v), f".{digits - 1}g")) for v in values]).astype(NUMPY_DTYPES[dtype])
        assert not np.array_equal(fewer, values), dtype
