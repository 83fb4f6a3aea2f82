"""tract: ConvTranspose runs output_padding >= max(stride, dilation) instead of refusing it.

Minimal ConvTranspose: X = [1, 2] (N = C = 1), W = [1.0] (M = 1), no bias, attributes {"kernel_shape": [1], "strides": [1], "output_padding": [1]}.
Expected per the ONNX ConvTranspose-22 text: the model is invalid (output_padding[0]=1 is not below max(stride=1, dilation=1)=1): a runtime must refuse it.
Spec text: output_padding "must be less than the corresponding stride/dilation dimension": 1 is not below max(1, 1).
Run: `python repro.py` with numpy, onnx and tract installed (`pip install numpy onnx tract`).
Exit code 1 while tract disagrees with the spec, 0 once it is fixed.
Found by deploykit's conformance matrix (`deploykit conformance run --backends tract-cpu`).
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

import tract; VERSION = tract.version()
ATTRIBUTES = {'kernel_shape': [1], 'strides': [1], 'output_padding': [1]}
X = np.array([[[1.0, 2.0]]], dtype=np.float32)
W = np.array([[[1.0]]], dtype=np.float32)
EXPECTED = None  # an invalid model: no right answer exists


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
        return 0
    print("actual  ", actual.shape, actual.ravel().tolist())
    print(f"expected: a refusal; tract ran it")
    return 1


if __name__ == "__main__":
    sys.exit(main())
