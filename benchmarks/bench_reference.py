"""Time the float64 NumPy oracle against torch float64 conv_transpose2d on a decoder layer.

One run: N=1, 256 -> 128 channels, 32x32 input, kernel 4, stride 2, pads 1 (output 64x64).
Both get the same float64 inputs; both are warmed up; then rounds alternate which one runs
first, and the medians are reported.  Target: reference time / torch time <= 1.0.

    .venv/bin/python benchmarks/bench_reference.py [--repeats 15] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deploykit.op import reference  # noqa: E402

N, C, M, H, W, K, S, P = 1, 256, 128, 32, 32, 4, 2, 1
TARGET_RATIO = 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (each runs both once)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs of each before timing")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((C, M, K, K)) / np.sqrt(C * K * K)
    b = rng.standard_normal(M)
    xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)

    def run_reference() -> np.ndarray:
        return reference.conv_transpose(x, w, b, strides=[S, S], pads=[P] * 4)

    def run_torch() -> np.ndarray:
        with torch.no_grad():
            return torch.nn.functional.conv_transpose2d(xt, wt, bt, stride=S, padding=P).numpy()

    ref_out = run_reference()
    torch_out = run_torch()
    assert ref_out.shape == torch_out.shape == (N, M, 2 * H, 2 * W), (ref_out.shape, torch_out.shape)
    assert np.allclose(ref_out, torch_out, rtol=1e-10, atol=1e-12), float(np.max(np.abs(ref_out - torch_out)))
    for _ in range(args.warmup):
        run_reference()
        run_torch()

    times = {"reference": [], "torch": []}
    runners = {"reference": run_reference, "torch": run_torch}
    for i in range(args.repeats):
        order = ("reference", "torch") if i % 2 == 0 else ("torch", "reference")
        for name in order:
            t0 = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - t0)

    flops = 2 * N * C * H * W * M * K * K
    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"layer: N={N} C={C} -> M={M}, {H}x{W} input, k{K} s{S} p{P}, float64; "
          f"{flops / 1e9:.3f} GFLOP per call")
    print(f"numpy {np.__version__}, torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
          f"repeats {args.repeats}")
    for name in ("reference", "torch"):
        lo, hi = min(times[name]), max(times[name])
        print(f"{name:>9}: median {med[name] * 1e3:8.3f} ms  (min {lo * 1e3:.3f}, max {hi * 1e3:.3f})  "
              f"{flops / med[name] / 1e9:7.2f} GFLOP/s")
    ratio = med["reference"] / med["torch"]
    met = ratio <= TARGET_RATIO
    print(f"ratio reference/torch: {ratio:.3f}  (target <= {TARGET_RATIO:.1f}: {'MET' if met else 'NOT MET'})")
    print("outputs match: allclose(rtol=1e-10, atol=1e-12) True")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
