"""conformance/repros/<id>/ has one source: `deploykit repro --divergence ID` writes it from the entry's
`repro:` block in conformance/known_divergences.yaml (or copies the script kept in deploykit/repro/scripts/).

Every committed folder is what the command writes, byte for byte: a changed template, table entry or
input generator fails here, naming the file, until `deploykit repro --divergence all -o conformance/repros`
writes the folders again.  Whether each folder still shows its divergence is tests/backends/test_cpu_runtimes.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import ROOT, assert_usage_error, deploykit

from deploykit.errors import UsageError
from deploykit.repro.divergence import ALL, SCRIPTS, repro_ids, script_ids, write_divergence, write_divergences
from deploykit.repro.folder import MARKER
from deploykit.results.divergences import Divergence, load
from deploykit.schema import validated

REPROS = ROOT / "conformance" / "repros"
TABLE = load()
IDS = repro_ids(TABLE)


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def differences(committed: Path, written: Path) -> list[str]:
    """What differs between two folders, by file name."""
    old, new = _files(committed), _files(written)
    found = [f"{name}: only in the committed folder" for name in sorted(old.keys() - new.keys())]
    found += [f"{name}: not committed" for name in sorted(new.keys() - old.keys())]
    found += [f"{name}: differs" for name in sorted(old.keys() & new.keys()) if old[name] != new[name]]
    return found


def test_the_committed_folders_are_exactly_the_known_ones():
    assert sorted(path.name for path in REPROS.iterdir()) == IDS


@pytest.mark.parametrize("ident", IDS)
def test_each_committed_folder_is_what_the_command_writes(tmp_path, ident):
    [written] = write_divergences(ident, tmp_path / ident, TABLE)
    found = differences(REPROS / ident, written.folder)
    assert not found, (f"conformance/repros/{ident}: {'; '.join(found)};"
                       f" write it again: deploykit repro --divergence {ident} -o conformance/repros/{ident}")


def test_the_comparison_names_the_file_that_differs(tmp_path):
    ident = next(entry.id for entry in TABLE if entry.repro and not entry.repro.script)
    shutil.copytree(REPROS / ident, tmp_path / "committed")
    (tmp_path / "committed" / "X.npy").write_bytes(b"edited")
    (tmp_path / "committed" / "notes.txt").write_text("mine")
    write_divergence(ident, tmp_path / "written", TABLE)
    assert differences(tmp_path / "committed", tmp_path / "written") == ["notes.txt: only in the committed folder", "X.npy: differs"]


def test_a_script_folder_is_the_script_kept_as_written(tmp_path):
    for ident in script_ids():
        written = write_divergence(ident, tmp_path / ident, TABLE)
        assert written.files == ["repro.py"]
        assert (tmp_path / ident / "repro.py").read_bytes() == (SCRIPTS / f"{ident}.py").read_bytes()
    scripted = {entry.id for entry in TABLE if entry.repro and entry.repro.script}
    assert scripted <= set(script_ids())


def test_the_folder_bytes_do_not_depend_on_the_machine(tmp_path, monkeypatch):
    """Nothing of the writing machine or the installed onnx reaches the files: ISSUE.md names the
    entry's versions, model.onnx carries no producer version."""
    import onnx

    ident = "openvino-same-negative-padding"
    written = write_divergence(ident, tmp_path / "a", TABLE)
    model = onnx.load(str(written.folder / "model.onnx"))
    assert (model.producer_name, model.producer_version) == ("deploykit", "")
    issue = (written.folder / "ISSUE.md").read_text()
    assert "2026.4.1" in issue and "Python" not in issue and "CPU:" not in issue
    monkeypatch.setattr(onnx, "__version__", "0.0.0")
    monkeypatch.setattr("platform.platform", lambda *args: "elsewhere")
    write_divergence(ident, tmp_path / "b", TABLE)
    assert differences(tmp_path / "a", tmp_path / "b") == []


def test_writing_again_replaces_an_unchanged_folder_and_keeps_a_changed_one(tmp_path):
    ident = "tract-output-shape-with-same"
    target = tmp_path / ident
    write_divergences(ident, target, TABLE)
    write_divergences(ident, target, TABLE)  # a previous bundle of the same case, unchanged: replaced
    (target / "ISSUE.md").write_text("my notes\n")
    with pytest.raises(UsageError, match="ISSUE.md was changed since deploykit wrote it"):
        write_divergences(ident, target, TABLE)
    assert (target / "ISSUE.md").read_text() == "my notes\n"
    marker = json.loads((target / MARKER).read_text())
    assert marker["details"]["divergence"] == ident


def test_all_writes_every_folder_into_the_given_one(tmp_path):
    written = write_divergences(ALL, tmp_path / "repros", TABLE)
    assert [w.id for w in written] == IDS
    assert sorted(path.name for path in (tmp_path / "repros").iterdir()) == IDS


def test_the_command_writes_a_folder(tmp_path):
    done = deploykit("repro", "--divergence", "tvm-pads-with-auto-pad", "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "known divergence tvm-pads-with-auto-pad" in done.stdout
    assert differences(REPROS / "tvm-pads-with-auto-pad", tmp_path / "out") == []


@pytest.mark.parametrize("args, needles", [
    (["--divergence", "no-such-entry", "-o", "out"], ["--divergence 'no-such-entry' names no known divergence", "all"]),
    (["--divergence", "tract-pads", "-o", "out"], ["did you mean", "tract-pads-with-auto-pad"]),
    (["--divergence", "tvm-pads-with-auto-pad", "--backend", "tvm-cpu", "-o", "out"], ["--backend is for a result in --db"]),
    (["--divergence", "tvm-pads-with-auto-pad", "--db", "r.db", "-o", "out"], ["--db is for a result in --db"]),
    # without --divergence, click's own words, in the order they always came (--config, --backend, -o)
    ([], ["Missing option '--config'."]),
    (["-o", "out"], ["Missing option '--config'."]),
    (["--backend", "ort-cpu"], ["Missing option '--config'."]),
    (["--config", "abc", "-o", "out"], ["Missing option '--backend'."]),
    (["-o", "out", "--config", "abc"], ["Missing option '--backend'."]),
    (["--config", "abc", "--backend", "ort-cpu"], ["Missing option '-o' / '--output'."]),
    (["--divergence", "tvm-pads-with-auto-pad"], ["Missing option '-o' / '--output'."]),
    (["--divergence", "tvm-pads-with-auto-pad", "-o", "mine"], ["holds files that are no deploykit repro bundle"]),
])
def test_bad_divergence_options_are_one_line_exit_2(tmp_path, args, needles):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert_usage_error(deploykit("repro", *args, cwd=tmp_path), *needles)
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("change, needle", [
    ({"backend": "ort-cpu"}, "repro.backend: 'ort-cpu' is none of the entry's backends"),
    ({"verdict": "crash"}, "repro.verdict: 'crash' is none of the entry's verdicts"),
    ({"spec": {"input_shape": [1, 1, 2], "kernel_shape": [1]}}, "repro.spec: not a config: out_channels is required"),
    ({"spec": {"input_shape": [1, 1, 2], "out_channels": 1, "kernel_shape": [1], "stride": 2}}, "unknown key(s) stride"),
    ({"colour": "red"}, "repro.colour: unknown key"),
    ({"script": "yes"}, "repro.script: must be a valid boolean"),
    ({"version": "0.26.0"}, "repro.version: '0.26.0' is outside the entry's versions (>=0.27)"),
])
def test_a_bad_repro_block_is_named(change, needle):
    entry = {"id": "x", "backends": ["tvm-cpu"], "hazard": "pads_with_auto_pad", "verdicts": ["accepted-invalid"], "reason": "r", "versions": ">=0.27",
             "repro": {"backend": "tvm-cpu", "spec": {"input_shape": [1, 1, 2], "out_channels": 1, "kernel_shape": [1]}}}
    entry["repro"].update(change)
    with pytest.raises(UsageError) as raised:
        validated(Divergence, entry, "entry")
    assert needle in str(raised.value)


def test_an_entry_with_several_verdicts_names_the_one_its_repro_shows():
    entry = {"id": "x", "backends": ["torch-cpu"], "hazard": "bf16_3d_depth_output_padding", "verdicts": ["drift", "nonfinite"],
             "reason": "r", "repro": {"backend": "torch-cpu", "spec": {"input_shape": [1, 1, 2], "out_channels": 1, "kernel_shape": [1]}}}
    with pytest.raises(UsageError, match="repro.verdict: is required where the entry lists several verdicts"):
        validated(Divergence, entry, "entry")


def test_a_run_stored_with_a_repro_path_keeps_its_own_table():
    """Tables before the `repro:` block named a script path there; a run stored with one is still
    judged with its own table, not today's."""
    from deploykit.results.divergences import for_run, snapshot

    stored = snapshot(TABLE)
    for entry in stored:
        if "repro" in entry:
            entry["repro"] = f"conformance/repros/{entry['id']}/repro.py"
    stored[0]["reason"] = "as the run saw it"
    table = for_run(stored)
    assert table[0].reason == "as the run saw it" and all(entry.repro is None for entry in table)
