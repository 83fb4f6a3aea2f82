"""TVM runtime: `Tensor.copyfrom(float16 array)` into a bfloat16 tensor silently keeps the bits, not the values.

`tvm.runtime.empty(shape, "bfloat16").copyfrom(array)` checks only the byte size: a NumPy float16
array (2 bytes per element, as bfloat16) is copied bit for bit and read as bfloat16, so
[1.0, 0.5, -2.0, 3.0] becomes [0.0078125, 3.05e-05, -2.0, 32.0] without an error.  A float32 or
float64 array fails loudly (size mismatch), and an ml_dtypes.bfloat16 array or a Python list is
converted correctly.  A bfloat16 model fed this way (e.g. through a bound input tensor) runs on
wrong inputs.  Run: `python repro.py` with numpy, ml_dtypes and apache-tvm installed.
Exit code 1 while the float16 array is reinterpreted, 0 once it is converted or refused.
Found by deploykit's tvm-cpu backend (which refuses any feed whose dtype differs from the model's).
"""

import sys

import ml_dtypes
import numpy as np
import tvm

VALUES = [1.0, 0.5, -2.0, 3.0]


def main() -> int:
    print(f"tvm {tvm.__version__}, numpy {np.__version__}, ml_dtypes {ml_dtypes.__version__}")
    source = np.array(VALUES, dtype=np.float16)
    tensor = tvm.runtime.empty((len(VALUES),), "bfloat16", tvm.cpu())
    try:
        tensor.copyfrom(source)
    except Exception as error:  # a refusal is a fix too
        print(f"copyfrom refused the float16 array: {type(error).__name__}: {' '.join(str(error).split())[:200]}")
        return 0
    actual = tensor.numpy().astype(np.float32).tolist()
    print("expected", VALUES)
    print("actual  ", actual)
    if actual != VALUES:
        print("the float16 bits were copied as they are and read as bfloat16")
        return 1
    print("fixed: the values were converted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
