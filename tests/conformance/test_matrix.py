"""Matrix and known-divergence table loading: expansion, coverage of the shipped files, clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
from helpers import ROOT

from deploykit.conformance.matrix import load
from deploykit.errors import UsageError
from deploykit.op.spec import ConvTransposeSpec, SpecError
from deploykit.paths import KNOWN_DIVERGENCES
from deploykit.results import divergences


def test_smoke_covers_every_attribute():
    specs = load("smoke").specs
    valid = [s for s in specs if s.expect == "accept"]
    assert {s.rank for s in valid} == {1, 2, 3}
    assert any(s.group > 1 and s.out_channels // s.group > 1 and s.in_channels != s.out_channels for s in valid)
    assert any(s.group > 1 and s.group == s.in_channels == s.out_channels for s in valid)  # depthwise
    assert any(s.auto_pad == "NOTSET" and s.output_shape is None and s.pads[: s.rank] != s.pads[s.rank :] for s in valid)
    for mode in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        assert any(s.auto_pad == mode for s in valid), mode
    assert any(s.auto_pad.startswith("SAME") and any(t % 2 for t in s.total_padding) for s in valid)
    assert any(s.output_shape and any(t > 0 for t in s.total_padding) for s in valid)
    assert any(s.output_shape and any(t < 0 for t in s.total_padding) for s in valid)
    assert any(any(s.output_padding) and set(s.dilations) == {1} for s in valid)
    assert any(any(s.output_padding) and max(s.dilations) > 1 for s in valid)
    assert any(max(s.strides) > 1 and max(s.dilations) > 1 for s in valid)
    assert {s.bias for s in valid} == {True, False}
    assert {"float32", "float16"} <= {s.dtype for s in valid}
    assert any(s.expect == "reject" for s in specs)


def test_default_matrix_is_a_few_hundred_valid_configs():
    specs = load("default").specs
    assert 200 <= len(specs) <= 800
    assert all(s.is_valid for s in specs)
    assert len({s.id for s in specs}) == len(specs)


def test_dtypes_retarget_and_bfloat16_raises_the_opset():
    specs = load("smoke", dtypes=["bfloat16"]).specs
    assert {s.dtype for s in specs} == {"bfloat16"}
    assert all(s.opset >= 22 for s in specs)


def test_pads_pair_broadcasts_to_begin_and_end():
    spec = ConvTransposeSpec((1, 2, 4, 4, 4), 2, 3, pads=[0, 1])
    assert spec.pads == (0, 0, 0, 1, 1, 1)


def test_axes_pairs_and_cross(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "cross: [dtype]\n"
        "defaults: {input_shape: [1, 4, 6], out_channels: 4}\n"
        "axes:\n  kernel_shape: [2, 3]\n  strides: [1, 2]\n  group: [1, 2]\n  dtype: [float32, float16]\n"
    )
    specs = load(str(path)).specs
    for dtype in ("float32", "float16"):
        subset = [s for s in specs if s.dtype == dtype]
        pairs = {(s.kernel_shape[0], s.strides[0]) for s in subset}
        assert pairs == {(2, 1), (2, 2), (3, 1), (3, 2)}


@pytest.mark.parametrize(
    "text, needle",
    [
        ("cases:\n  - {input_shape: [1, 4, 5], out_channels: 4, kernel_shape: 3, expect: reject}\n", "marked `expect: reject` but the config is valid"),
        ("cases:\n  - {input_shape: [1, 4, 5], out_channels: 4, kernel_shape: [3, 3]}\n", "kernel_shape has 2 values, expected 1"),
        ("cases:\n  - {input_shape: [1, 4, 5], kernel_shape: 3}\n", "out_channels is required"),
        ("axes: [1, 2]\n", "matrix m.yaml: axes: must be a mapping, got [1, 2]"),
        ("oops: 1\n", "matrix m.yaml: oops: unknown key; known keys: name, description, defaults, axes,"),
        ("defaults: {input_shape: [1, 4, 5], out_channels: 4, kernel_shape: 3}\naxes:\n  foo: [1, 2]\n  strides: [1, 2]\n",
         "unknown key(s) foo"),
        ("defaults: {input_shape: [1, 4, 5], out_channels: 4}\naxes:\n  kernel_shape: 3\n", "matrix m.yaml: axes.kernel_shape: must be a list, got 3"),
        ("axes:\n  strides: []\n", "matrix m.yaml: axes.strides: must not be empty, got []"),
        ("axes:\n  strides: [1]\ncross: [nope]\n", "matrix m.yaml: cross: 'nope' is not an axis; axes: strides"),
        ("axes:\n  strides: [1]\nexpand: all\n", "matrix m.yaml: expand: must be 'pairwise' or 'product', got 'all'"),
        ("cross: [true]\n", "matrix m.yaml: cross[0]: must be a string, got True"),
        ("name: !!binary aGk=\n", "matrix m.yaml: name: must be a string, got b'hi'"),  # strict: no bytes -> str
        ("cases:\n  - {input_shape: [1, 4, 5], out_channels: 4}\n  - 3\n  - [a]\n",
         "matrix m.yaml: cases[1]: must be a mapping, got 3; cases[2]: must be a mapping, got ['a']"),
        ("- {name: a}\n", "matrix m.yaml: must be a mapping, got [{'name': 'a'}]; known keys: name, description,"),
        ("cases:\n  - {input_shape: [1, 4, 5], out_channels: 4, kernel_shape: 3, dtype: bfloat16, opset: 17}\n", "bfloat16 ConvTranspose needs opset >= 22"),
    ],
)
def test_matrix_errors_name_the_problem(tmp_path, text, needle):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=None) as error:
        load(str(path))
    assert needle in str(error.value) and "\n" not in str(error.value), str(error.value)


# ----- strict types: a wrong type is a usage error, never a silent conversion ----------------------
BASE = {"input_shape": (1, 4, 5, 5), "out_channels": 4, "kernel_shape": 3}


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"group": True}, "group must be a positive integer, got True"),
        ({"out_channels": True}, "out_channels must be a positive integer, got True"),
        ({"opset": True}, "opset True is outside"),
        ({"bias": "false"}, "bias must be true or false, got 'false'"),
        ({"bias": 1}, "bias must be true or false, got 1"),
        ({"weights_as_inputs": "yes"}, "weights_as_inputs must be true or false, got 'yes'"),
        ({"input_shape": 5}, "input_shape must be an integer or a list"),
        ({"name": ""}, "name must not be empty"),
        ({"dtype": ["float32"]}, "dtype ['float32'] is not one of"),
    ],
)
def test_spec_refuses_wrong_types(change, needle):
    with pytest.raises(SpecError) as error:
        ConvTransposeSpec(**{**BASE, **change})
    assert needle in str(error.value)


@pytest.mark.parametrize(
    "name, count, digest",
    [("smoke", 31, "0d5bef6d28488dcc"), ("default", 448, "34a36a382474ddf0"), ("decoder", 6, "6ae5bc065fca1286")],
)
def test_shipped_matrices_keep_their_config_ids(name, count, digest):
    """Stored results are keyed by config id: stricter validation must not move any id."""
    ids = sorted(s.id for s in load(name).specs)
    assert (len(ids), hashlib.sha256(",".join(ids).encode()).hexdigest()[:16]) == (count, digest)


def write(tmp_path, text: str, name: str = "m.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


LAYER = "input_shape: [1, 4, 5, 5], out_channels: 3, kernel_shape: [3, 3]"


@pytest.mark.parametrize(
    "text, pattern",
    [
        (f"cases:\n  - {{name: a, {LAYER}}}\n  - {{name: a, {LAYER}}}\n  - {{name: my-layer, {LAYER}, bias: 'false'}}\n",
         r"^matrix m\.yaml, case 2 \(my-layer\): bias must be true or false, got 'false'$"),
        (f"cases:\n  - {{{LAYER}, group: true}}\n", r"^matrix m\.yaml, case 0: group must be a positive integer, got True$"),
        (f"defaults: {{{LAYER}}}\naxes:\n  strides: [1, 2]\n  bias: [true, 'no']\n",
         r"^matrix m\.yaml, axes row \{'strides': [12], 'bias': 'no'\}: bias must be true or false, got 'no'$"),
        # `opset: true` once became opset 22 when --dtypes bfloat16 raised "an opset below 22"
        (f"cases:\n  - {{{LAYER}, opset: true}}\n", r"^matrix m\.yaml, case 0 as bfloat16: opset True is outside"),
        ("name: [a]\ncases: []\n", r"^matrix m\.yaml: name: must be a string, got \['a'\]$"),
    ],
)
def test_wrong_types_in_a_matrix_are_one_line_naming_file_row_and_key(tmp_path, text, pattern):
    with pytest.raises(UsageError) as error:
        load(write(tmp_path, text), dtypes=["bfloat16"] if "opset" in text else None)
    assert re.search(pattern, str(error.value)), str(error.value)


# ----- unreadable matrix files -------------------------------------------------------------------------
def test_non_utf8_matrix_is_a_usage_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(f"cases:\n  - {{name: caf\xe9, {LAYER}}}\n".encode("latin-1"))
    with pytest.raises(UsageError, match=r"latin1.yaml.*not UTF-8 text \(byte 0xe9 at offset \d+\)"):
        load(str(path))


def test_directory_or_fifo_given_as_matrix_is_named_as_such(tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(UsageError, match="folder.yaml is a directory, not a matrix file"):
        load(str(tmp_path / "folder.yaml"))
    with pytest.raises(UsageError, match="is a directory, not a matrix file"):
        load(str(tmp_path))
    os.mkfifo(tmp_path / "pipe.yaml")  # reading it would block forever: it must be refused unread
    with pytest.raises(UsageError, match="pipe.yaml is not a regular file"):
        load(str(tmp_path / "pipe.yaml"))


def test_a_key_given_twice_is_a_usage_error_not_the_last_value(tmp_path):
    text = f"cases:\n  - {{{LAYER}, strides: 1, strides: 2}}\n"
    with pytest.raises(UsageError, match="malformed YAML at line 2: key 'strides' is given twice"):
        load(write(tmp_path, text))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_unreadable_matrix_is_a_usage_error(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text(f"cases:\n  - {{{LAYER}}}\n")
    path.chmod(0)
    with pytest.raises(UsageError, match="cannot read matrix .*secret.yaml: Permission denied"):
        load(str(path))


# ----- empty matrices, duplicate names, readable unique labels -------------------------------------------
@pytest.mark.parametrize(
    "text, needle",
    [
        ("cases: []\n", "matrix m.yaml holds no configs"),
        ("name: only-a-name\n", "matrix m.yaml holds no configs"),
        ("defaults: {input_shape: [1, 4, 5], out_channels: 4, kernel_shape: 3}\naxes:\n  group: [3, 5]\n",
         "matrix m.yaml: every axes row breaks an ONNX rule, so axes: adds no config"),
    ],
)
def test_an_empty_matrix_is_a_usage_error(tmp_path, text, needle):
    with pytest.raises(UsageError) as error:
        load(write(tmp_path, text))
    assert needle in str(error.value)


def test_one_name_for_two_configs_is_a_usage_error_naming_both(tmp_path):
    text = f"cases:\n  - {{name: a, {LAYER}}}\n  - {{name: b, {LAYER}, strides: 3}}\n  - {{name: a, {LAYER}, strides: 2}}\n"
    with pytest.raises(UsageError) as error:
        load(write(tmp_path, text))
    assert "matrix m.yaml, case 2 (a): name 'a' is already used by case 0 (a) for a different config" in str(error.value)


def test_two_names_for_one_config_is_a_usage_error_naming_both(tmp_path):
    text = f"cases:\n  - {{name: a, {LAYER}}}\n  - {{name: b, {LAYER}, bias: true}}\n"
    with pytest.raises(UsageError) as error:
        load(write(tmp_path, text))
    assert "matrix m.yaml, case 1 (b): the same config as case 0 (a)" in str(error.value)


def test_an_identical_repeated_case_is_kept_once(tmp_path):
    text = f"cases:\n  - {{name: a, {LAYER}}}\n  - {{name: a, {LAYER}}}\n"
    assert [s.label for s in load(write(tmp_path, text)).specs] == ["a"]


def test_auto_labels_that_differ_only_in_shape_get_a_shape_suffix(tmp_path):
    text = (
        "defaults: {kernel_shape: 3, strides: 2}\n"
        "cases:\n"
        "  - {input_shape: [1, 8, 5, 5], out_channels: 4}\n"
        "  - {input_shape: [1, 8, 5, 5], out_channels: 2}\n"
        "  - {input_shape: [1, 4, 5, 5], out_channels: 4, strides: 1}\n"
    )
    labels = [s.label for s in load(write(tmp_path, text)).specs]
    assert labels == ["2d-k3s2p0-op0-d1-g1-f32-1x8x5x5to4", "2d-k3s2p0-op0-d1-g1-f32-1x8x5x5to2", "2d-k3s1p0-op0-d1-g1-f32"]


def test_named_cases_retargeted_to_several_dtypes_get_a_dtype_suffix():
    specs = load("smoke", dtypes=["float32", "float16"]).specs
    labels = [s.label for s in specs]
    assert len(set(labels)) == len(labels) == 62
    assert {"2d-dcgan-k4s2p1-f32", "2d-dcgan-k4s2p1-f16"} <= set(labels)


@pytest.mark.parametrize("name", ["smoke", "default", "decoder"])
def test_shipped_matrices_have_unique_labels_and_keep_explicit_names(name):
    specs = load(name).specs
    assert len({s.label for s in specs}) == len(specs)
    assert len({s.id for s in specs}) == len(specs)
    if name == "smoke":
        assert "2d-op-below-dilation-only" in {s.label for s in specs}
        assert all(s.label == s.name for s in specs)


# ----- the known-divergence table ------------------------------------------------------------------------
ENTRY = {"id": "x", "backends": ["ort-cpu"], "hazard": "grouped", "verdicts": ["rejected"], "reason": "r", "upstream": "u"}


def entry(**changes) -> str:
    """One table entry as a YAML flow mapping; a value of None leaves the key out."""
    fields = {k: v for k, v in {**ENTRY, **changes}.items() if v is not None}
    return "- {" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in fields.items()) + "}\n"


def test_the_shipped_divergence_table_loads(tmp_path):
    table = divergences.load(KNOWN_DIVERGENCES)
    assert len(table) >= 8 and len({d.id for d in table}) == len(table)
    expected = divergences.Divergence("x", ("ort-cpu",), "grouped", ("rejected",), "r", "u")
    assert divergences.load(write(tmp_path, entry(), "known.yaml")) == [expected]
    padded = divergences.load(write(tmp_path, entry(reason=" r ", upstream=None), "known.yaml"))
    assert padded == [divergences.Divergence("x", ("ort-cpu",), "grouped", ("rejected",), " r ")]  # kept as written


@pytest.mark.parametrize("kind", ["missing", "directory", "latin-1"])
def test_an_unusable_divergence_table_is_an_error_not_an_empty_table(tmp_path, kind):
    path = tmp_path / "known.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "latin-1":
        path.write_bytes(entry(reason="caf").replace("caf", "caf\xe9").encode("latin-1"))
    with pytest.raises(UsageError, match=r"known-divergence table .*known\.yaml"):
        divergences.load(path)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "is empty; write [] for a table without entries"),
        ("{id: x}\n", "must be a list of entries"),
        (entry(note="n"), "entry 0 (x): note: unknown key; known keys: id, backends, hazard, verdicts, reason, upstream"),
        (entry(reason=None), "entry 0 (x): reason: is required"),
        (entry(id=None, reason=None), "entry 0: id: is required; reason: is required"),  # every problem, one line
        (entry(backends="ort-cpu"), "entry 0 (x): backends: must be a list, got 'ort-cpu'"),
        (entry(backends=[]), "entry 0 (x): backends: must not be empty, got []"),
        (entry(backends=[None]), "entry 0 (x): backends[0]: must be a string, got None"),
        (entry(verdicts=["rejected", 3]), "entry 0 (x): verdicts[1]: must be a string, got 3"),
        (entry(reason=5), "entry 0 (x): reason: must be a string, got 5"),
        (entry(reason=" "), "entry 0 (x): reason: must not be blank, got ' '"),
        (entry(upstream=""), "entry 0 (x): upstream: must not be blank, got ''"),  # may be left out, not left empty
        (entry(id=True), "entry 0: id: must be a string, got True"),
        (entry(reason=None).replace("}", ", reason: !!binary aGk=}"), "entry 0 (x): reason: must be a string, got b'hi'"),
        (entry(hazard="groupd"), "entry 0 (x): hazard: unknown hazard 'groupd'; known: "),
        (entry(verdicts=["rejectd"]), "entry 0 (x): verdicts[0]: unknown verdict 'rejectd'; known: "),
        (entry(verdicts=["pass"]), "entry 0 (x): verdicts[0]: unknown verdict 'pass'"),
        (entry() + entry(), "entry 1 (x): id 'x' is already used by entry 0"),
        ("- [x]\n", "entry 0: must be a mapping, got ['x']; known keys: id, backends,"),
    ],
)
def test_divergence_entries_are_validated_by_schema(tmp_path, text, needle):
    path = tmp_path / "known.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as error:
        divergences.load(path)
    message = str(error.value)
    assert f"known-divergence table {path}" in message and needle in message and "\n" not in message, message


@pytest.mark.slow
@pytest.mark.parametrize(
    "matrix, table, needle",
    [
        ("axes: {strides: [1, 2]}\nexpand: all\n", entry(), "matrix m.yaml: expand: must be 'pairwise' or 'product', got 'all'"),
        (f"cases:\n  - {{{LAYER}}}\n", entry(hazard="nope", verdicts=[1]),
         "entry 0 (x): hazard: unknown hazard 'nope'; known: output_padding_ge_stride,"),
    ],
)
def test_schema_errors_reach_the_command_line_as_one_line_exit_2(tmp_path, matrix, table, needle):
    """A pydantic ValidationError never leaks as a traceback or a multi-line block."""
    (tmp_path / "m.yaml").write_text(matrix)
    (tmp_path / "known_divergences.yaml").write_text(table)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEPLOYKIT_CONFORMANCE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "deploykit", "conformance", "run", "--matrix", "m.yaml", "--db", "x.db"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert (proc.returncode, len(lines)) == (2, 1) and needle in lines[0] and "Traceback" not in proc.stdout, proc.stderr
