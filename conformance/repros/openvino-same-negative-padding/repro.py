"""OpenVINO CPU: ConvTranspose with SAME_UPPER and kernel extent < stride returns the natural size instead of input x stride.

Minimal ConvTranspose: X = [1, 2] (N = C = 1), W = [1.0] (M = 1), no bias, attributes {"kernel_shape": [1], "strides": [2], "auto_pad": "SAME_UPPER"}.
Expected per the ONNX ConvTranspose-22 text: Y = [0.0, 1.0, 0.0, 2.0] (shape [1, 1, 4]).
Spec text: auto_pad SAME_*: "the output shape is input_shape * strides"; total padding 1*(2-1)+1-4 = -1 means one zero of extension.
Run: `python repro.py` with numpy, onnx and openvino installed (`pip install numpy onnx openvino`).
Exit code 1 while openvino disagrees with the spec, 0 once it is fixed.
Found by deploykit's conformance matrix (`deploykit conformance run --backends openvino-cpu`).
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

import openvino; VERSION = openvino.__version__
ATTRIBUTES = {'kernel_shape': [1], 'strides': [2], 'auto_pad': 'SAME_UPPER'}
X = np.array([[[1.0, 2.0]]], dtype=np.float32)
W = np.array([[[1.0]]], dtype=np.float32)
EXPECTED = np.array([[[0.0, 1.0, 0.0, 2.0]]], dtype=np.float32)


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
    import openvino as ov
    compiled = ov.Core().compile_model(ov.Core().read_model(model=model_bytes, weights=b""), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled({"X": x})[compiled.outputs[0]]


def main() -> int:
    print(f"openvino {VERSION}, onnx {onnx.__version__}, numpy {np.__version__}")
    model = model_bytes()
    try:
        actual = np.asarray(run(model, X))
    except ImportError:  # part of the runtime is not installed: that is no refusal, and no verdict
        raise
    except Exception as error:  # the runtime refused the model
        print(f"openvino refused the model: {type(error).__name__}: {' '.join(str(error).split())[:400]}")
        return 1
    print("actual  ", actual.shape, actual.ravel().tolist())
    print("expected", EXPECTED.shape, EXPECTED.ravel().tolist())
    if actual.shape != EXPECTED.shape or not np.allclose(actual, EXPECTED):
        print("openvino disagrees with the ONNX spec")
        return 1
    print("fixed: matches the ONNX spec")
    return 0


if __name__ == "__main__":
    sys.exit(main())
