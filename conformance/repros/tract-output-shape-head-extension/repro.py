"""tract: ConvTranspose with an output_shape larger than the natural output extends with zeros at the end only.

Minimal ConvTranspose: X = [1, 2] (N = C = 1), W = [1.0, 10.0] (M = 1), no bias, attributes {"kernel_shape": [2], "strides": [1], "output_shape": [5]}.
Expected per the ONNX ConvTranspose-22 text: Y = [0.0, 1.0, 12.0, 20.0, 0.0] (shape [1, 1, 5]).
Spec text: total_padding = 3 - 5 = -2; not SAME_UPPER: pads[start] = -1, pads[end] = -1 (one zero on each side).
Run: `python repro.py` with numpy, onnx and tract installed (`pip install numpy onnx tract`).
Exit code 1 while tract disagrees with the spec, 0 once it is fixed.
Found by deploykit's conformance matrix (`deploykit conformance run --backends tract-cpu`).
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

import tract; VERSION = tract.version()
ATTRIBUTES = {'kernel_shape': [2], 'strides': [1], 'output_shape': [5]}
X = np.array([[[1.0, 2.0]]], dtype=np.float32)
W = np.array([[[1.0, 10.0]]], dtype=np.float32)
EXPECTED = np.array([[[0.0, 1.0, 12.0, 20.0, 0.0]]], dtype=np.float32)


def model_bytes() -> bytes:
    node = helper.make_node("ConvTranspose", ["X", "W"], ["Y"], **ATTRIBUTES)
    graph = helper.make_graph(
        [node], "repro", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, None, None])], [onnx.numpy_helper.from_array(W, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()

def run(model_bytes, x):
    import os
    import tempfile

    import tract
    handle, path = tempfile.mkstemp(suffix=".onnx")
    with os.fdopen(handle, "wb") as file:
        file.write(model_bytes)
    try:
        runnable = tract.onnx().load(path).into_model().into_runnable()  # a panic here aborts the process
    finally:
        os.unlink(path)
    return runnable.run([x])[0].to_numpy()


def main() -> int:
    print(f"tract {VERSION}, onnx {onnx.__version__}, numpy {np.__version__}")
    model = model_bytes()
    try:
        actual = np.asarray(run(model, X))
    except ImportError:  # part of the runtime is not installed: that is no refusal, and no verdict
        raise
    except Exception as error:  # the runtime refused the model
        print(f"tract refused the model: {type(error).__name__}: {' '.join(str(error).split())[:400]}")
        return 1
    print("actual  ", actual.shape, actual.ravel().tolist())
    print("expected", EXPECTED.shape, EXPECTED.ravel().tolist())
    if actual.shape != EXPECTED.shape or not np.allclose(actual, EXPECTED):
        print("tract disagrees with the ONNX spec")
        return 1
    print("fixed: matches the ONNX spec")
    return 0


if __name__ == "__main__":
    sys.exit(main())
