"""Does deploykit's timing engine report what a bare loop measures?

ort-cpu on the decoder layer (N=1, 256 -> 128 channels, 32x32, k4 s2 p1): deploykit's reported
median (runner.iteration + timing.measure, IO binding) against a bare `timeit` loop of
`InferenceSession.run` on the same session and inputs.  Rounds alternate between the two so the
machine's drift hits both alike; the ratio of medians should sit within 0.95-1.05.

    python benchmarks/bench_fidelity.py [--rounds 7] [--number 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import timeit

from deploykit.backends import get
from deploykit.backends.base import BuildConfig
from deploykit.backends.timing import TimingOptions, measure
from deploykit.onnxio.write import build_case
from deploykit.op.spec import ConvTransposeSpec

DECODER_LAYER = ConvTransposeSpec((1, 256, 32, 32), 128, (4, 4), strides=2, pads=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds of each method")
    parser.add_argument("--number", type=int, default=20, help="calls per bare timeit sample")
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads")
    args = parser.parse_args()

    case = build_case(DECODER_LAYER)
    runner = get("ort-cpu").load(case, BuildConfig(threads=args.threads))
    runner.activate()
    session, feeds = runner.session, case.feeds
    options = TimingOptions(warmup_ms=200, iterations=args.number, duration_s=0.5)
    iteration = runner.iteration(feeds)
    deploykit_medians, bare_medians = [], []
    timer = timeit.Timer(lambda: session.run(None, feeds))
    timer.timeit(number=args.number)  # warm-up for the bare loop
    for _ in range(args.rounds):
        deploykit_medians.append(measure(iteration, options).median_ms)
        per_call = [t / args.number * 1e3 for t in timer.repeat(repeat=args.number, number=args.number)]
        bare_medians.append(statistics.median(per_call))
    runner.deactivate()
    ours, bare = statistics.median(deploykit_medians), statistics.median(bare_medians)
    ratio = ours / bare
    print(f"model: {DECODER_LAYER.label}, {DECODER_LAYER.flops / 1e9:.3f} GFLOP, ort-cpu, {args.threads} threads")
    print(f"deploykit median (IO binding, per-call samples): {ours:8.3f} ms   rounds: {', '.join(f'{m:.3f}' for m in deploykit_medians)}")
    print(f"bare timeit of InferenceSession.run          : {bare:8.3f} ms   rounds: {', '.join(f'{m:.3f}' for m in bare_medians)}")
    verdict = "within" if 0.95 <= ratio <= 1.05 else "OUTSIDE"
    print(f"ratio deploykit/bare: {ratio:.3f} ({verdict} 0.95-1.05)")


if __name__ == "__main__":
    main()
