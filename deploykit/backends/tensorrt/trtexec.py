"""`deploykit generate --trtexec`: trtexec's inputs and a script that runs it on every case.

TensorRT's own command-line tool needs neither Python nor deploykit on the GPU machine.  Per case,
`test_data_set_0/<input>.bin` holds each graph input as raw bytes in its own element type, row
major, no header (`--loadInputs=name:file`; bfloat16 as its 16 bits); weights that are graph
inputs get files too.  `trtexec.sh` at the tree's root runs trtexec on each case with the build
flags the `tensorrt` backend uses for the chosen precision (`engines.create_config_flags`: TF32 off
unless asked for, strongly typed networks for float16/bfloat16 models) and `--exportOutput` into
the case's `actual.json`; where trtexec fails, its error lines go to `error.txt` instead.  Then
`deploykit conformance judge TREE --as tensorrt --precision P` judges what it wrote.

Written from TensorRT's documentation and its open-source trtexec (samples/common); it has not been
run against a real TensorRT.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import numpy as np

from deploykit.backends.tensorrt.engines import STRONGLY_TYPED, create_config_flags
from deploykit.errors import UsageError
from deploykit.onnxio.read import graph_inputs
from deploykit.onnxio.write import Case

SCRIPT = "trtexec.sh"
#: the script's second line begins so; a file without it is the user's, never overwritten
_MARK = "# Written by `deploykit generate --trtexec`"

_PROLOGUE = """#!/usr/bin/env bash
""" + _MARK + """ (build precision {precision}): runs trtexec on every case
# of this tree.  Each case gets test_data_set_0/actual.json (trtexec --exportOutput), or error.txt
# with the error lines of trtexec's log (test_data_set_0/trtexec.log) when trtexec refuses the model.
# A case where trtexec dies on a signal, or writes no output, gets no answer and is named on stderr.
# Then: deploykit conformance judge <this folder> --as tensorrt --precision {precision} --version <TensorRT version>
# TRTEXEC=/path/to/trtexec runs another trtexec than the one on PATH.
set -u
cd "$(dirname "${{BASH_SOURCE[0]}}")" || exit 2
TRTEXEC="${{TRTEXEC:-trtexec}}"
if ! command -v "$TRTEXEC" >/dev/null 2>&1; then
  echo "trtexec.sh: $TRTEXEC not found; put trtexec on PATH or set TRTEXEC" >&2
  exit 2
fi
unanswered=0

run_case() {{  # a case folder, then trtexec's options for it
  local case="$1"; shift
  local data="$case/test_data_set_0"
  rm -f "$data/actual.json" "$data/error.txt"
  "$TRTEXEC" --onnx="$case/model.onnx" "$@" --exportOutput="$data/actual.json" >"$data/trtexec.log" 2>&1
  local status=$?
  if [ "$status" -eq 0 ] && [ -s "$data/actual.json" ]; then
    return 0
  fi
  rm -f "$data/actual.json"
  if [ "$status" -eq 0 ] || [ "$status" -gt 128 ]; then
    echo "trtexec.sh: no answer for $case (trtexec exit status $status); see $data/trtexec.log" >&2
    unanswered=$((unanswered + 1))
    return 0
  fi
  {{ grep -E '\\[E\\]' "$data/trtexec.log" || tail -n 5 "$data/trtexec.log"; }} | tail -n 8 >"$data/error.txt"
}}

"""

_EPILOGUE = """
echo "trtexec.sh: ran {count} case(s), $unanswered without an answer"
[ "$unanswered" -eq 0 ]
"""


def check_script_path(tree: Path) -> None:
    """A `trtexec.sh` already in the folder is replaced only when an earlier `generate` wrote it."""
    path = tree / SCRIPT
    if os.path.lexists(path):
        try:
            ours = _MARK in path.read_text(errors="replace")[:500]
        except OSError:
            ours = False
        if not ours:
            raise UsageError(f"--out {tree}: {path} exists and was not written by `deploykit generate --trtexec`;"
                             " move it or choose another --out")


def write_inputs(case: Case, data: Path) -> list[Path]:
    """Each graph input as raw bytes, `<name>.bin`, beside the case's .pb inputs."""
    written = []
    for name, value in case.feeds.items():
        path = data / f"{name}.bin"
        path.write_bytes(np.ascontiguousarray(value).tobytes())
        written.append(path)
    return written


def build_flags(dtype: str, precision: str) -> list[str]:
    """trtexec's flags for what the `tensorrt` backend builds at `precision` for a `dtype` model."""
    flags = create_config_flags(precision, dtype)
    chosen = ["--stronglyTyped"] if dtype in STRONGLY_TYPED else []
    chosen += [] if flags["tf32"] else ["--noTF32"]
    chosen += ["--fp16"] if flags["fp16"] else []
    chosen += ["--bf16"] if flags["bf16"] else []
    return chosen


def case_options(case: Case, folder_name: str, precision: str) -> list[str]:
    """trtexec's options for one case: its inputs, the shapes of dynamic ones, the build flags."""
    data = f"{folder_name}/test_data_set_0"
    options = ["--loadInputs=" + ",".join(f"{name}:{data}/{name}.bin" for name in case.feeds)]
    dynamic = [i for i in graph_inputs(case.model) if not all(isinstance(d, int) for d in i.dims)]
    if dynamic:
        options.append("--shapes=" + ",".join(f"{i.name}:{'x'.join(map(str, case.feeds[i.name].shape))}" for i in dynamic))
    return options + build_flags(case.require_spec().dtype, precision)


def write_script(tree: Path, cases: list[tuple[str, Case]], precision: str) -> Path:
    """`trtexec.sh` at the tree's root: one `run_case` line per (case folder name, case)."""
    lines = [_PROLOGUE.format(precision=precision)]
    for folder_name, case in cases:
        words = ["run_case", folder_name, *case_options(case, folder_name, precision)]
        lines.append(" ".join(map(shlex.quote, words)) + "\n")
    lines.append(_EPILOGUE.format(count=len(cases)))
    path = tree / SCRIPT
    path.write_text("".join(lines))
    path.chmod(0o755)
    return path
