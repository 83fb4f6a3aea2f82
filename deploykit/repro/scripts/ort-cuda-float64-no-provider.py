"""onnxruntime-gpu: a float64 ConvTranspose with pads fails at session creation on the CUDA execution provider.

NEEDS an NVIDIA GPU and onnxruntime-gpu (`pip install numpy onnx onnxruntime-gpu`); without the CUDA
execution provider it says so and exits 2 (nothing shown either way).
Minimal ConvTranspose models, float64: X = [[[1, 2, 3]]] (N = C = 1), W = [[[1, 1, 1]]] (M = 1),
no bias, kernel_shape [3], strides [1], and each of: pads [1, 1]; auto_pad SAME_UPPER; auto_pad VALID.
Expected per the ONNX ConvTranspose-22 text: pads [1, 1] and SAME_UPPER give Y = [3, 6, 5];
VALID gives Y = [1, 3, 6, 5, 3].  The CUDA provider registers a float64 ConvTranspose kernel.
Seen with onnxruntime-gpu 1.31.1 on an H200: session creation fails for padded and SAME_*
float64 models ("TransformerMemcpyImpl::IsNodeCompatibleWithProvider ... !node_provider_type.empty()");
VALID ones mostly run.  This script has not been run on a GPU in this form.
Run: `python repro.py`.  Exit code 1 while a model is refused or wrong, 0 once all three run right.
Found by deploykit's fuzzer (`deploykit conformance fuzz --backends ort-cuda`).
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

import onnxruntime; VERSION = onnxruntime.__version__
X = np.array([[[1.0, 2.0, 3.0]]], dtype=np.float64)
W = np.array([[[1.0, 1.0, 1.0]]], dtype=np.float64)
CASES = {
    "pads [1, 1]": ({"kernel_shape": [3], "pads": [1, 1]}, [3.0, 6.0, 5.0]),
    "auto_pad SAME_UPPER": ({"kernel_shape": [3], "auto_pad": "SAME_UPPER"}, [3.0, 6.0, 5.0]),
    "auto_pad VALID": ({"kernel_shape": [3], "auto_pad": "VALID"}, [1.0, 3.0, 6.0, 5.0, 3.0]),
}


def model_bytes(attributes: dict) -> bytes:
    node = helper.make_node("ConvTranspose", ["X", "W"], ["Y"], **attributes)
    graph = helper.make_graph(
        [node], "repro", [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [1, 1, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, [None, None, None])], [onnx.numpy_helper.from_array(W, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def run(model: bytes) -> np.ndarray:
    onnxruntime.set_default_logger_severity(4)  # the refusal is printed once, below
    session = onnxruntime.InferenceSession(model, providers=[("CUDAExecutionProvider", {"use_tf32": "0"})])
    if "CUDAExecutionProvider" not in session.get_providers():
        raise RuntimeError(f"the session runs on {session.get_providers()}, not on CUDA")
    return session.run(None, {"X": X})[0]


def main() -> int:
    print(f"onnxruntime {VERSION}, onnx {onnx.__version__}, numpy {np.__version__}")
    if hasattr(onnxruntime, "preload_dlls"):
        onnxruntime.preload_dlls()  # onnxruntime-gpu finds the CUDA and cuDNN wheels' libraries
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        print("this repro needs onnxruntime-gpu and an NVIDIA GPU: CUDAExecutionProvider is not available"
              f" (providers: {onnxruntime.get_available_providers()})")
        return 2
    failed = 0
    for name, (attributes, expected) in CASES.items():
        try:
            actual = np.asarray(run(model_bytes(attributes)))
        except ImportError:  # part of the runtime is not installed: that is no refusal
            raise
        except Exception as error:  # the runtime refused the model
            print(f"{name}: onnxruntime refused the model: {type(error).__name__}: {' '.join(str(error).split())[:400]}")
            failed += 1
            continue
        right = actual.shape == (1, 1, len(expected)) and np.allclose(actual.ravel(), expected)
        print(f"{name}: actual {actual.ravel().tolist()}, expected {expected}{'' if right else ': WRONG'}")
        failed += not right
    if failed:
        print(f"onnxruntime's CUDA provider fails {failed} of {len(CASES)} float64 models")
        return 1
    print("fixed: every float64 model runs and matches the ONNX spec")
    return 0


if __name__ == "__main__":
    sys.exit(main())
