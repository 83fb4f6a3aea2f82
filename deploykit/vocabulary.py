"""The words every layer shares: model dtypes, build precisions and verdicts, each as a Literal type and a table.

They live here, below everything else, so that a layer that needs one of them does not have to import the layer
that happens to use it most (the operator's maths once imported the ONNX writer for its dtype table, the
divergence file the backends for their precisions).  Each table's keys are exactly its Literal's values;
tests/project/test_layers.py checks that they agree.
"""

from __future__ import annotations

from typing import Literal, get_args

import ml_dtypes
import numpy as np

#: The dtypes a generated model computes in.
DType = Literal["float32", "float16", "bfloat16", "float64"]
MODEL_DTYPES: tuple[DType, ...] = get_args(DType)
NUMPY_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float64": np.dtype(np.float64),
}

#: Build precisions, what each lets a backend do, and the bound's term for it (deploykit.op.bound).
Precision = Literal["fp32", "tf32", "fp16", "bf16"]
PRECISIONS: dict[str, str] = {
    "fp32": "the model's own dtypes; float32 as float32 (TF32 off)",
    "tf32": "float32 products on TF32 tensor cores (inputs rounded to a 10-bit mantissa, float32 sums)",
    "fp16": "float32 models run in float16 where the backend chooses (weights and activations rounded)",
    "bf16": "float32 models run in bfloat16 where the backend chooses",
}

#: Verdicts and what each means; the report reads this table, and tests/project/test_docs.py checks docs/verdicts.md lists the same.
Verdict = Literal["pass", "drift", "shape-mismatch", "rejected", "accepted-invalid", "nonfinite", "crash", "timeout",
                  "unsupported", "unavailable"]
VERDICTS: dict[str, str] = {
    "pass": "within the rounding-error bound (or correctly refused a spec-invalid model)",
    "drift": "ran, right shape, but some element is beyond the rounding-error bound",
    "shape-mismatch": "output shape differs from the ONNX spec text",
    "rejected": "refused a spec-valid model (load or run error)",
    "accepted-invalid": "ran a model that breaks the ONNX spec instead of refusing it",
    "nonfinite": "NaN or Inf where the reference is finite",
    "crash": "the worker process died (segfault, abort) on this config",
    "timeout": "the backend exceeded the per-config time limit",
    "unsupported": "documented non-support by the backend (e.g. a dtype it has no kernel for)",
    "unavailable": "the backend's package or hardware is missing on this machine",
}
#: Verdicts that say a configuration was not run at all, rather than how it ran.
SKIPPED: tuple[Verdict, ...] = ("unsupported", "unavailable")
