"""Rebuild this folder's fixture from the raw GPU outputs measured on an H200.

    python tests/data/gpu_h200/make_fixture.py RAW_DIR

RAW_DIR holds `gpu-specs.json` (config id -> spec), `gpu-outputs-torch-cuda.npz` and
`gpu-outputs-ort-cuda.npz` (key "<config id>/<precision>" -> the output exactly as
`deploykit.execution.execute.run_backend` returned it) and `probes.json` (accumulation probes).  They were
measured with torch 2.11.0+cu130 (cuDNN 9.19.0) and onnxruntime-gpu 1.31.1 on an NVIDIA H200,
driver 580.159.04, on 2026-12-04.  Inputs are never stored: `deploykit.onnxio.write.make_inputs(spec)`
redraws X, W and B exactly from the config id.

The fixture keeps the hardest cases, not all of them (tests/backends/test_gpu_fixture.py judges them):
for each backend, dtype and precision, the results closest to the bound of the backend's
declared accumulation model, the results furthest beyond one float32 sum (the former false
alarms), and the results where the most products reach one output.  Outputs of more than
MAX_ELEMENTS values are left out to keep the fixture small.  `wrong` holds outputs that are
genuinely wrong (see WRONG below); they must still fail.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from deploykit import backends as registry
from deploykit.backends.base import BuildConfig
from deploykit.onnxio.write import make_inputs
from deploykit.op.bound import OneSum, error_bound
from deploykit.op.judging import measure
from deploykit.op.reference import ExactAnswer
from deploykit.op.spec import ConvTransposeSpec

HERE = Path(__file__).resolve().parent
MAX_ELEMENTS = 2048
#: per (backend, dtype, precision): how many of each kind of hard case to keep
NEAREST_THE_BOUND, BEYOND_ONE_FLOAT32_SUM, MOST_PRODUCTS = 10, 6, 3
#: A config whose right answer is zero-extended at both ends (output_shape beyond the natural size):
#: ONNX Runtime puts every zero at the end (known divergence ort-output-shape-head-extension).  A
#: GPU fuzz run found ort-cuda's output identical to ort-cpu's; the output kept here is ort-cpu's.
WRONG = [{"input_shape": [1, 2, 5], "out_channels": 3, "kernel_shape": [3], "strides": [3], "output_shape": [17],
          "dtype": "float16", "bias": True, "name": "1d-f16-output-shape-head-extension"}]


def exact_answer(spec: ConvTransposeSpec) -> ExactAnswer:
    x, w, b = make_inputs(spec)
    as64 = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    return ExactAnswer(spec, as64(x), as64(w), as64(b))


def scored(raw: Path) -> list[dict]:
    """Every spec-valid GPU result with its ratio under the declared model and under one float32 sum."""
    specs = json.loads((raw / "gpu-specs.json").read_text())
    rows = []
    for backend in ("torch-cuda", "ort-cuda"):
        outputs = np.load(raw / f"gpu-outputs-{backend}.npz")
        for key in outputs.files:
            config_id, precision = key.split("/")
            spec = ConvTransposeSpec.from_dict(specs[config_id])
            output = outputs[key]
            if spec.expect == "reject" or output.size > MAX_ELEMENTS or tuple(output.shape) != spec.output_full_shape:
                continue
            exact = exact_answer(spec)
            models = registry.get(backend).accumulation(spec.dtype, BuildConfig(precision))
            ratio = measure(output, exact.output, error_bound(spec, exact, models), spec.dtype).bound_ratio
            plain = error_bound(spec, exact, [OneSum("float32", operands="tfloat32" if precision == "tf32" and spec.dtype == "float32" else None)])
            rows.append({"key": f"{backend}/{key}", "backend": backend, "precision": precision, "spec": specs[config_id],
                         "ratio": ratio, "float32_sum_ratio": measure(output, exact.output, plain, spec.dtype).bound_ratio,
                         "products": int(exact.tap_count.max()) * (spec.in_channels // spec.group), "output": output})
    return rows


def hardest(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["backend"], row["spec"]["dtype"], row["precision"]), []).append(row)
    kept: dict[str, dict] = {}
    for group in groups.values():
        for field, count in (("ratio", NEAREST_THE_BOUND), ("float32_sum_ratio", BEYOND_ONE_FLOAT32_SUM), ("products", MOST_PRODUCTS)):
            for row in sorted(group, key=lambda r: r[field], reverse=True)[:count]:
                kept[row["key"]] = row
    return sorted(kept.values(), key=lambda r: r["key"])


def wrong_outputs() -> list[dict]:
    from deploykit.execution.execute import run_backend
    from deploykit.onnxio.write import build_case

    rows = []
    for config in WRONG:
        spec = ConvTransposeSpec.from_dict(config)
        backend = registry.get("ort-cpu")
        outcome = run_backend(backend, backend.probe(), build_case(spec), BuildConfig())
        rows.append({"key": f"wrong/ort-cuda/{spec.id}", "backend": "ort-cuda", "precision": "fp32", "spec": spec.to_dict(),
                     "output": next(iter(outcome.outputs.values())), "source": "ort-cpu 1.31.1, identical to ort-cuda's (GPU fuzz run)"})
    return rows


def main(raw: Path) -> None:
    kept = hardest(scored(raw)) + wrong_outputs()
    arrays = {row["key"]: _storable(row.pop("output")) for row in kept}
    probes = json.loads((raw / "probes.json").read_text())
    for index, probe in enumerate(probes):  # the values go to the npz, the description stays in JSON
        for field in ("exact", "torch", "ort"):
            values = probe.pop(field, None)
            if values is not None:
                stored = np.asarray(values, np.float32)  # exact: sums of a few thousand multiples of 2^-14
                assert np.array_equal(stored, np.asarray(values)), "a probe value is not exact in float32"
                arrays[f"probe/{index}/{field}"] = stored
    np.savez_compressed(HERE / "outputs.npz", **arrays)
    cases = {"measured": "torch 2.11.0+cu130 (cuDNN 9.19.0), onnxruntime-gpu 1.31.1, NVIDIA H200, driver 580.159.04, 2026-12-04",
             "cases": kept, "probes": probes}
    (HERE / "cases.json").write_text(_one_per_line(cases, kept, probes))
    print(f"{len(kept)} cases, {len(probes)} probes")


def _one_per_line(cases: dict, kept: list[dict], probes: list[dict]) -> str:
    """JSON with one case or probe per line, so a change to the fixture reads as a short diff."""
    rows = lambda items: ",\n".join("  " + json.dumps(item, separators=(",", ":")) for item in items)  # noqa: E731
    return (f'{{"measured": {json.dumps(cases["measured"])},\n "cases": [\n{rows(kept)}\n ],\n'
            f' "probes": [\n{rows(probes)}\n ]}}\n')


def _storable(output: np.ndarray) -> np.ndarray:
    """bfloat16 as float32 (exact); other dtypes as they are."""
    return output.astype(np.float32) if output.dtype.name == "bfloat16" else output


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_fixture.py RAW_DIR")
    main(Path(sys.argv[1]))
