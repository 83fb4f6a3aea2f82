"""No output path destroys an input: every (command, output option, input option) pair is refused
in one line, before any work, however the output spells the input's path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import ROOT, assert_usage_error, deploykit, snapshot

from deploykit.errors import UsageError
from deploykit.onnxio.write import build_case
from deploykit.op.spec import ConvTransposeSpec
from deploykit.outputs import check_paths
from deploykit.results.store import Store

SPEC = ConvTransposeSpec(input_shape=(1, 1, 3), out_channels=1, kernel_shape=(2,))
FACTORY = "import torch\n\n\ndef make():\n    return torch.nn.ConvTranspose1d(1, 1, 2), (torch.randn(1, 1, 3),)\n"
TABLE = "data/known_divergences.yaml"


def _spell(folder: Path, name: str, how: str) -> str:
    """Another way to name `folder/name` (made here: a symlink, a hard link, a symlinked folder)."""
    if how == "same":
        return name
    if how == "dot":
        return f"./{name}"
    if how == "absolute":
        return str(folder / name)
    if how == "parent":
        (folder / "sub").mkdir(exist_ok=True)
        return f"sub/../{name}"
    if how == "symlink":
        os.symlink(folder / name, folder / "alias")
        return "alias"
    if how == "hardlink":
        os.link(folder / name, folder / "hard")
        return "hard"
    if how == "linked-folder":
        os.symlink(folder, folder / "linked", target_is_directory=True)
        return f"linked/{name}"
    raise AssertionError(how)


SPELLINGS = ("same", "dot", "absolute", "parent", "symlink", "hardlink", "linked-folder")
FOLDER_SPELLINGS = ("dot", "absolute", "linked-folder")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """Every kind of input a command reads: a results database, a matrix, a model, a factory, a
    profile, the known-divergence table (through DEPLOYKIT_CONFORMANCE_DIR) and two shards."""
    store = Store(tmp_path / "r.db")
    run_id = store.start_run("test", {}, {}, 0)
    store.finish_run(run_id)
    store.close()
    for copy in ("base.db", "s1.db", "s2.db"):
        shutil.copy(tmp_path / "r.db", tmp_path / copy)
    (tmp_path / "m.yaml").write_text("cases:\n  - {name: tiny, input_shape: [1, 1, 3], out_channels: 1, kernel_shape: [2]}\n")
    (tmp_path / "model.onnx").write_bytes(build_case(SPEC).model_bytes)
    (tmp_path / "f.py").write_text(FACTORY)
    shutil.copy(ROOT / "engines" / "profiles" / "default.yaml", tmp_path / "prof.yaml")
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "conformance" / "known_divergences.yaml", tmp_path / TABLE)
    answers = tmp_path / "tree" / "case" / "test_data_set_0"
    answers.mkdir(parents=True)
    (answers / "actual_0.npy").write_bytes(b"an answer")  # what `conformance judge` reads
    return tmp_path


#: (command line with {out} where the output goes, output option, input option, the input's path)
PAIRS = [
    ("generate --matrix m.yaml --out {out}", "--out", "--matrix", "."),
    ("conformance run --matrix m.yaml --backends reference --db r.db --json {out}", "--json", "--db", "r.db"),
    ("conformance run --matrix m.yaml --backends reference --db r.db --json {out}", "--json", "--matrix", "m.yaml"),
    ("conformance run --matrix m.yaml --backends reference --db r.db --json {out}", "--json", "known-divergence table", TABLE),
    ("conformance run --matrix m.yaml --backends reference --db r.db --json {out}", "--json", "--db", "r.db-journal"),
    ("conformance report --db r.db -o {out}", "-o", "--db", "r.db"),
    ("conformance report --db r.db -o {out}", "-o", "known-divergence table", TABLE),
    ("conformance compare --baseline base.db --db r.db --json {out}", "--json", "--baseline", "base.db"),
    ("conformance compare --baseline base.db --db r.db --json {out}", "--json", "--db", "r.db"),
    ("conformance merge s1.db s2.db -o {out}", "-o", "SHARDS", "s2.db"),
    ("conformance fuzz --backends reference --max-examples 1 --db r.db --json {out}", "--json", "--db", "r.db"),
    ("conformance fuzz --backends reference --max-examples 1 --db r.db --json {out}", "--json", "known-divergence table", TABLE),
    ("repro --db r.db --config tiny --backend reference -o {out}", "-o", "--db", "."),
    ("profile model.onnx --backends reference --warmup-ms 0 --duration 0 --iterations 1 --json {out}", "--json", "MODEL", "model.onnx"),
    ("profile --matrix m.yaml --config tiny --backends reference --warmup-ms 0 --duration 0 --iterations 1 --json {out}",
     "--json", "--matrix", "m.yaml"),
    ("export f.py:make --verify-backends reference -o {out}", "-o", "TARGET", "f.py"),
    ("export f.py:make --verify-backends reference -o x.onnx --json {out}", "--json", "TARGET", "f.py"),
    ("export f:make --verify-backends reference -o {out}", "-o", "TARGET", "f.py"),  # a module, found as the import finds it
    ("export f.py:make --verify-backends reference -o x.onnx --engine {out}", "--engine", "TARGET", "f.py"),
    ("export f.py:make --verify-backends reference -o {out} --engine-profile prof.yaml", "-o", "--engine-profile", "prof.yaml"),
    ("export f.py:make --verify-backends reference -o x.onnx --engine-profile prof.yaml --json {out}",
     "--json", "--engine-profile", "prof.yaml"),
    ("export f.py:make --verify-backends reference -o x.onnx --engine-profile prof.yaml --engine {out}",
     "--engine", "--engine-profile", "prof.yaml"),
    ("export f.py:make --verify-backends reference -o {out} --json x.json", "-o", "--json", "x.json"),
    ("export f.py:make --verify-backends reference -o {out} --engine x.plan", "-o", "--engine", "x.plan"),
    ("export f.py:make --verify-backends reference -o x.onnx --json {out} --engine x.json", "--json", "--engine", "x.json"),
    ("conformance judge tree --as reference --db r.db --json {out}", "--json", "answers in DIR",
     "tree/case/test_data_set_0/actual_0.npy"),
    ("conformance judge tree --as reference --db r.db --json {out}", "--json", "--db", "r.db"),
    ("lint model.onnx --json {out}", "--json", "MODEL", "model.onnx"),
    ("lint model.onnx --db r.db --json {out}", "--json", "--db", "r.db"),
    ("lint model.onnx --json {out}", "--json", "known-divergence table", TABLE),
]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PAIRS)), ids=[f"{p[0].split(' -')[0]} {p[1]} vs {p[2]} {p[3]}" for p in PAIRS])
def test_an_output_naming_an_input_is_refused_before_any_work(files, index):
    command, output_option, input_option, target = PAIRS[index]
    kinds = FOLDER_SPELLINGS if target == "." else SPELLINGS
    how = kinds[index % len(kinds)]  # every spelling on several commands, without running every product
    out = _spell(files, target, how) if target != "." else {"dot": ".", "absolute": str(files)}.get(how) or _linked(files)
    before = snapshot(files)
    proc = deploykit(*command.format(out=out).split(), cwd=files, env={"DEPLOYKIT_CONFORMANCE_DIR": str(files / "data")},
                     timeout=120)
    assert_usage_error(proc, output_option, input_option)
    assert snapshot(files) == before, f"{how}: {proc.stdout}"


def _linked(folder: Path) -> str:
    os.symlink(folder, folder / "linked", target_is_directory=True)
    return "linked"


@pytest.mark.parametrize("how", SPELLINGS)
def test_every_spelling_of_the_database_is_caught(tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.db").write_bytes(b"")
    with pytest.raises(UsageError, match=r"^--json .* is --db r\.db"):
        check_paths(databases={"--db": "r.db"}, outputs={"--json": _spell(tmp_path, "r.db", how)})


def test_a_database_not_created_yet_is_protected_too(tmp_path, monkeypatch):
    """`conformance run --db new.db --json new.db` would create the database, then write JSON over it."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="is --db new.db"):
        check_paths(databases={"--db": "new.db"}, outputs={"--json": "./new.db"})
    with pytest.raises(UsageError, match="wal file SQLite keeps beside --db new.db"):
        check_paths(databases={"--db": "new.db"}, outputs={"--json": str(tmp_path / "new.db-wal")})


def test_two_outputs_on_one_file_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"^-o m\.onnx and --json \./m\.onnx are the same file"):
        check_paths(outputs={"-o": "m.onnx", "--json": "./m.onnx"})


def test_an_output_folder_holding_an_input_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / "m.yaml").write_text("")
    with pytest.raises(UsageError, match=r"^--out cases holds --matrix cases/m\.yaml"):
        check_paths(inputs={"--matrix": "cases/m.yaml"}, output_folders={"--out": "cases"})
    with pytest.raises(UsageError, match="holds --matrix"):
        check_paths(inputs={"--matrix": str(tmp_path / "cases" / "m.yaml")}, output_folders={"--out": "."})


def test_paths_that_do_not_clash_pass(tmp_path, monkeypatch):
    """A built-in name is no file; a sibling, a prefix (`r.db2`) or a missing input clash with nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.db").write_bytes(b"")
    check_paths(inputs={"--matrix": "smoke", "MODEL": None, "SHARDS": ["a.db", "b.db"]}, databases={"--db": "r.db"},
                outputs={"--json": "r.db2", "-o": "out.json", "--engine": None}, output_folders={"--out": "suite"})
    check_paths(databases={"--db": "cases/r.db"}, output_folders={"-o": "cases-bundle"})
