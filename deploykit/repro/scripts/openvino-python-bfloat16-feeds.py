"""OpenVINO Python API: a bfloat16 array passed to `InferRequest.infer()` silently becomes wrong inputs.

OpenVINO's Python API maps `Type.bf16` to NumPy float16.  An `ml_dtypes.bfloat16` array (the usual
NumPy bfloat16) given to `InferRequest.infer({name: array})` is converted *by value* to float16, and
those float16 bits are then read as bfloat16: the model runs on garbage without an error.  The same
array through `CompiledModel.__call__` (which shares the buffer) and a tensor built from the raw
bits, `ov.Tensor(x.view(np.uint16), shape, ov.Type.bf16)`, both give the right answer.
Model: one bfloat16 ConvTranspose (opset 22), X [1, 1, 4], W = [1, 1] (identity-like, k2 s2).
Run: `python repro.py` with numpy, onnx, ml_dtypes and openvino installed.
Exit code 1 while `infer()` with a bfloat16 array gives wrong values, 0 once it is fixed.
Found by deploykit's openvino-cpu backend (which feeds the raw bits instead).
"""

import sys

import ml_dtypes
import numpy as np
import onnx
import openvino as ov
from onnx import TensorProto, helper

X = np.array([[[1.0, 2.0, 3.0, 4.0]]], dtype=ml_dtypes.bfloat16)
W = np.array([[[1.0, 1.0]]], dtype=ml_dtypes.bfloat16)
EXPECTED = np.array([[[1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]]], dtype=np.float32)  # stride 2, kernel [1, 1]


def model_bytes() -> bytes:
    node = helper.make_node("ConvTranspose", ["X", "W"], ["Y"], kernel_shape=[2], strides=[2])
    graph = helper.make_graph(
        [node], "repro", [helper.make_tensor_value_info("X", TensorProto.BFLOAT16, [1, 1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.BFLOAT16, [None, None, None])],
        [onnx.numpy_helper.from_array(W, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)], ir_version=10).SerializeToString()


def main() -> int:
    print(f"openvino {ov.__version__}, onnx {onnx.__version__}, ml_dtypes {ml_dtypes.__version__}")
    compiled = ov.Core().compile_model(ov.Core().read_model(model=model_bytes(), weights=b""), "CPU")
    request = compiled.create_infer_request()
    by_bits = request.infer({"X": ov.Tensor(X.view(np.uint16), list(X.shape), ov.Type.bf16)})[compiled.outputs[0]].copy()
    by_array = request.infer({"X": X})[compiled.outputs[0]].copy()
    as_float = lambda y: np.asarray(y).view(np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)  # noqa: E731
    print("expected           ", EXPECTED.ravel().tolist())
    print("raw bf16 bits      ", as_float(by_bits).ravel().tolist())
    print("ml_dtypes bf16 array", as_float(by_array).ravel().tolist())
    if not np.allclose(as_float(by_array), EXPECTED):
        print("the bfloat16 array was converted by value to float16 and read back as bfloat16")
        return 1
    print("fixed: a bfloat16 array gives the right answer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
