"""tract 0.23.9: ConvTranspose computes wrong values (1-D X[1, 1, 2], kernel_shape=[2], output_shape=[5])

Run in a virtual environment with only these packages:  pip install numpy tract==0.23.9
    python repro.py
Exit code 1 while the runtime disagrees with the ONNX spec text (deploykit's verdict: drift),
0 once it is fixed.  model.onnx is one ConvTranspose node; X.npy, W.npy and B.npy hold its
inputs, expected.npy the float64 answer of the ONNX formula, bound.npy the largest rounding error
a correct float computation can make per element.  ISSUE.md says more.
"""

import sys
from pathlib import Path

import numpy as np
import tract

HERE = Path(__file__).resolve().parent
RUNTIME = "tract"
VERSION = tract.version()
DTYPE = "float32"
FEEDS = ['X']  # the graph inputs, in order
SPEC_INVALID = False  # the model breaks a rule of the ONNX spec: a runtime must refuse it
VIOLATIONS = ""


def run(model_path, feeds):  # a panic inside tract aborts the process (exit code 134)
    runnable = tract.onnx().load(model_path).into_model().into_runnable()
    return runnable.run([feeds[name] for name in FEEDS])[0].to_numpy()


def load(name):
    """An input as the model's dtype (bfloat16 is stored as float32, exactly, and needs ml_dtypes)."""
    array = np.load(HERE / f"{name}.npy")
    if DTYPE == "bfloat16":
        import ml_dtypes

        return array.astype(ml_dtypes.bfloat16)
    return array.astype(DTYPE)


def compare(actual):
    expected, bound = np.load(HERE / "expected.npy"), np.load(HERE / "bound.npy")
    print(f"expected shape {list(expected.shape)}, actual shape {list(actual.shape)}")
    if actual.shape != expected.shape:
        print("wrong output shape")
        return 1
    error = np.abs(actual.astype(np.float64) - expected)
    bad = ~(error <= bound)  # NaN counts as beyond the bound
    if not bad.any():
        print("matches the ONNX spec within the rounding-error bound: fixed")
        return 0
    worst = np.unravel_index(int(np.argmax(np.where(bad, np.nan_to_num(error, nan=np.inf), -1.0))), error.shape)
    print(f"{int(bad.sum())} of {error.size} outputs are beyond the rounding-error bound; at index {list(map(int, worst))}"
          f" expected {float(expected[worst])!r}, got {float(actual[worst])!r} (bound {float(bound[worst]):.3g})")
    if expected.size <= 32:
        print("expected", np.round(expected.ravel(), 6).tolist())
        print("actual  ", np.round(actual.astype(np.float64).ravel(), 6).tolist())
    return 1


def main():
    print(f"{RUNTIME} {VERSION}, numpy {np.__version__}")
    feeds = {name: load(name) for name in FEEDS}
    try:
        actual = np.asarray(run(str(HERE / "model.onnx"), feeds))
    except ImportError:  # part of the runtime is not installed: that is no refusal, and no verdict
        raise
    except Exception as error:  # the runtime refused the model
        message = " ".join(str(error).split())[:600]
        if SPEC_INVALID:
            print(f"refused the spec-invalid model, as it should: {message}")
            return 0
        print(f"refused a valid model: {type(error).__name__}: {message}")
        return 1
    if SPEC_INVALID:
        print(f"ran a model the ONNX spec rules out ({VIOLATIONS}); output shape {list(actual.shape)}")
        return 1
    return compare(actual)


if __name__ == "__main__":
    sys.exit(main())
