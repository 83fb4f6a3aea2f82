"""TVM (Relax ONNX frontend): ConvTranspose ignores output_shape and returns the natural size.

Minimal ConvTranspose: X = [1, 2] (N = C = 1), W = [1.0, 10.0] (M = 1), no bias, attributes {"kernel_shape": [2], "strides": [1], "output_shape": [2]}.
Expected per the ONNX ConvTranspose-22 text: Y = [12.0, 20.0] (shape [1, 1, 2]).
Spec text: total_padding = stride*(in-1) + output_padding + ((kernel-1)*dilation+1) - output_shape = 3 - 2 = 1; not SAME_UPPER: pads[start] = total_padding - total_padding // 2 = 1, pads[end] = 0.
Run: `python repro.py` with numpy, onnx and apache-tvm installed (`pip install numpy onnx apache-tvm`).
Exit code 1 while tvm disagrees with the spec, 0 once it is fixed.
Found by deploykit's conformance matrix (`deploykit conformance run --backends tvm-cpu`).
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

import tvm; VERSION = tvm.__version__
ATTRIBUTES = {'kernel_shape': [2], 'strides': [1], 'output_shape': [2]}
X = np.array([[[1.0, 2.0]]], dtype=np.float32)
W = np.array([[[1.0, 10.0]]], dtype=np.float32)
EXPECTED = np.array([[[12.0, 20.0]]], dtype=np.float32)


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
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx
    module = from_onnx(onnx.load_from_string(model_bytes))  # input dtypes and shapes from the graph
    vm = relax.VirtualMachine(tvm.compile(module, target=tvm.target.Target("llvm")), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def main() -> int:
    print(f"tvm {VERSION}, onnx {onnx.__version__}, numpy {np.__version__}")
    model = model_bytes()
    try:
        actual = np.asarray(run(model, X))
    except ImportError:  # part of the runtime is not installed: that is no refusal, and no verdict
        raise
    except Exception as error:  # the runtime refused the model
        print(f"tvm refused the model: {type(error).__name__}: {' '.join(str(error).split())[:400]}")
        return 1
    print("actual  ", actual.shape, actual.ravel().tolist())
    print("expected", EXPECTED.shape, EXPECTED.ravel().tolist())
    if actual.shape != EXPECTED.shape or not np.allclose(actual, EXPECTED):
        print("tvm disagrees with the ONNX spec")
        return 1
    print("fixed: matches the ONNX spec")
    return 0


if __name__ == "__main__":
    sys.exit(main())
