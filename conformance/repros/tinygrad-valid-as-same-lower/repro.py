"""tinygrad: ConvTranspose with auto_pad VALID pads like SAME_LOWER and returns input x stride.

Minimal ConvTranspose: X = [1, 2] (N = C = 1), W = [1.0, 10.0, 100.0] (M = 1), no bias, attributes {"kernel_shape": [3], "strides": [1], "auto_pad": "VALID"}.
Expected per the ONNX ConvTranspose-22 text: Y = [1.0, 12.0, 120.0, 200.0] (shape [1, 1, 4]).
Spec text: auto_pad VALID means no padding: output = stride*(in-1) + ((kernel-1)*dilation+1) = 4, not input x stride = 2.
Run: `python repro.py` with numpy, onnx and tinygrad installed (`pip install numpy onnx tinygrad`).
Exit code 1 while tinygrad disagrees with the spec, 0 once it is fixed.
Found by deploykit's conformance matrix (`deploykit conformance run --backends tinygrad-cpu`).
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

from importlib.metadata import version; VERSION = version("tinygrad")
ATTRIBUTES = {'kernel_shape': [3], 'strides': [1], 'auto_pad': 'VALID'}
X = np.array([[[1.0, 2.0]]], dtype=np.float32)
W = np.array([[[1.0, 10.0, 100.0]]], dtype=np.float32)
EXPECTED = np.array([[[1.0, 12.0, 120.0, 200.0]]], dtype=np.float32)


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
    from tinygrad import Tensor
    from tinygrad.helpers import Context
    from tinygrad.nn.onnx import OnnxRunner
    with Context(DEV="CPU"):  # the CPU device compiles with clang (Debian: apt-get install clang)
        return OnnxRunner(Tensor(model_bytes))({"X": x})["Y"].numpy()


def main() -> int:
    print(f"tinygrad {VERSION}, onnx {onnx.__version__}, numpy {np.__version__}")
    model = model_bytes()
    try:
        actual = np.asarray(run(model, X))
    except ImportError:  # part of the runtime is not installed: that is no refusal, and no verdict
        raise
    except Exception as error:  # the runtime refused the model
        print(f"tinygrad refused the model: {type(error).__name__}: {' '.join(str(error).split())[:400]}")
        return 1
    print("actual  ", actual.shape, actual.ravel().tolist())
    print("expected", EXPECTED.shape, EXPECTED.ravel().tolist())
    if actual.shape != EXPECTED.shape or not np.allclose(actual, EXPECTED):
        print("tinygrad disagrees with the ONNX spec")
        return 1
    print("fixed: matches the ONNX spec")
    return 0


if __name__ == "__main__":
    sys.exit(main())
