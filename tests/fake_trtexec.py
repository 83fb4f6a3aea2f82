"""A stand-in for TensorRT's trtexec, for tests of `generate --trtexec`'s script and `conformance judge`.

It does what the real tool does with the options trtexec.sh passes: reads each graph input from its
`--loadInputs` raw file (the input's own element type, row-major, no header; a file of the wrong
size is refused as trtexec's loadFromFile refuses it), computes the output (deploykit's float64
reference, rounded to the model's output type as a runtime returns it) and writes `--exportOutput`
in trtexec's layout, values at a C++ stream's default 6 significant digits.  A spec-invalid model
is refused with an `[E]` log line and exit status 1.  FAKE_TRTEXEC_DIE=TEXT makes it die on SIGSEGV
for a case whose folder name holds TEXT.  Its command line is echoed first, as trtexec does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from deploykit.onnxio.read import ONNX_TO_DTYPE, graph_inputs
from deploykit.onnxio.write import NUMPY_DTYPES
from deploykit.op.reference import run_spec
from deploykit.op.spec import ConvTransposeSpec


def _options(argv: list[str]) -> dict[str, str]:
    return dict(arg.split("=", 1) if "=" in arg else (arg, "") for arg in argv)


def _input_files(spec: str) -> dict[str, str]:
    pairs = (item.split(":", 1) for item in spec.split(","))
    return {name.strip("'"): path for name, path in pairs}


def _shapes(spec: str) -> dict[str, tuple[int, ...]]:
    pairs = (item.split(":", 1) for item in spec.split(",") if item)
    return {name.strip("'"): tuple(int(d) for d in dims.split("x")) for name, dims in pairs}


def _read_inputs(model: onnx.ModelProto, options: dict[str, str]) -> dict[str, np.ndarray] | str:
    files, shapes = _input_files(options["--loadInputs"]), _shapes(options.get("--shapes", ""))
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for graph_input in graph_inputs(model):
        dtype = NUMPY_DTYPES[ONNX_TO_DTYPE[graph_input.elem_type]]
        shape = shapes.get(graph_input.name) or tuple(graph_input.dims)
        raw = Path(files[graph_input.name]).read_bytes()
        size = math.prod(shape) * dtype.itemsize
        if len(raw) != size:
            return (f"Unexpected file size for input file: {files[graph_input.name]}. Note: Input binding size is:"
                    f" {size} bytes but the file size is {len(raw)} bytes.")
        arrays[graph_input.name] = np.frombuffer(raw, dtype).reshape(shape)
    return arrays


def _export(path: str, name: str, output: np.ndarray) -> None:
    """exportJSONOutput's layout: values as `os << float(v)` prints them (6 significant digits)."""
    values = ", ".join(format(float(v), ".6g") for v in output.reshape(-1))
    dims = "x".join(map(str, output.shape))
    Path(path).write_text(f'[\n  {{ "name" : "{name}"\n  , "dimensions" : "{dims}"\n  , "values" : [ {values} ]\n  }}\n]\n')


def main(argv: list[str]) -> int:
    print("&&&& RUNNING TensorRT.trtexec [TensorRT v100800] # trtexec " + " ".join(argv), flush=True)
    options = _options(argv)
    folder = Path(options["--onnx"]).parent
    if os.environ.get("FAKE_TRTEXEC_DIE") and os.environ["FAKE_TRTEXEC_DIE"] in folder.name:
        os.kill(os.getpid(), signal.SIGSEGV)
    meta = json.loads((folder / "deploykit.json").read_text())
    if meta["violations"]:
        print(f"[12/04/2025-10:00:00] [E] [TRT] ModelImporter.cpp:949: ERROR: {meta['violations'][0]}")
        print("&&&& FAILED TensorRT.trtexec [TensorRT v100800]")
        return 1
    model = onnx.load(options["--onnx"])
    arrays = _read_inputs(model, options)
    if isinstance(arrays, str):
        print(f"[12/04/2025-10:00:00] [E] {arrays}")
        return 1
    known = {f.name for f in dataclasses.fields(ConvTransposeSpec)}
    spec = ConvTransposeSpec.from_dict({k: v for k, v in meta.items() if k in known})
    output = run_spec(spec, arrays["X"], arrays["W"], arrays.get("B")).astype(NUMPY_DTYPES[spec.dtype])
    _export(options["--exportOutput"], model.graph.output[0].name, output)
    print("&&&& PASSED TensorRT.trtexec [TensorRT v100800]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
