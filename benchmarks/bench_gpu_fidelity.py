"""Does deploykit's GPU timing report what a bare loop measures?  (torch-cuda and ort-cuda)

On the decoder layer (matrix `decoder`, config `decoder-256-128-32x32-k4s2p1`), rounds alternate
between deploykit's timing (`runner.iteration` + `timing.measure`) and bare loops on the same
session (ORT) or the same device tensors (torch), so the machine's drift hits both alike.  Per
backend and mode it prints, as JSON lines, the medians and their ratio:

- `plain`, figure `gpu`: GPU compute time, against a bare loop of CUDA events around one call;
- `plain`, figure `host`: host latency, against a bare host-timer loop (torch: the call and a
  stream synchronise; ORT: `run_with_iobinding` with no run options, which synchronises its stream);
- `cuda-graph`, figures `gpu` (torch) and `host`: one replay of a CUDA graph, against a bare replay
  loop (ORT: `enable_cuda_graph=1` on a session of its own, since a captured graph keeps the
  addresses of the binding it was captured with).

For ort-cuda it also times variants that isolate where a call's overhead comes from (lines with
`"checked": false`): RunOptions without `gpu_graph_id` (onnxruntime's Python wrapper then raises and
catches a lookup error per call), an extra `IOBinding.synchronize_outputs()` (a device-wide
synchronise), both (what deploykit's loop did before), a session with one intra-op thread, and the
verdict's session on ORT's own stream.

Exit status: 1 when a checked ratio lies outside 0.95-1.05; 0 otherwise.  Where there is no GPU it
prints "no GPU: <why>" and exits 0 (CI runs it everywhere); with a GPU but no torch with CUDA (for
the CUDA events) it says so and exits 2.

    python benchmarks/bench_gpu_fidelity.py [--rounds 5] [--seconds 0.2] [--precision fp32] > fidelity.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable

CONFIG = "decoder-256-128-32x32-k4s2p1"
LOW, HIGH = 0.95, 1.05


def no_gpu_reason() -> str | None:
    """Why this machine has no GPU to time on, or None."""
    from deploykit.backends.tensorrt import cuda_driver
    return cuda_driver.missing_reason()


def bare_samples(call: Callable[[], float], seconds: float, warmup: int = 50) -> float:
    """Median of per-call samples (each `call()` returns its own ms) over `seconds` of calls."""
    for _ in range(warmup):
        call()
    samples, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < 10:
        samples.append(call())
    return statistics.median(samples)


def host_loop(run: Callable[[], object], sync: Callable[[], object] = lambda: None) -> Callable[[], float]:
    """One sample: perf_counter_ns around `run` and `sync`, nothing else."""
    def sample() -> float:
        begin = time.perf_counter_ns()
        run()
        sync()
        return (time.perf_counter_ns() - begin) / 1e6

    return sample


def event_loop(torch, run: Callable[[], object], stream) -> Callable[[], float]:
    """One sample: CUDA events on `stream` around `run`, then an event synchronise."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def sample() -> float:
        start.record(stream)
        run()
        end.record(stream)
        end.synchronize()
        return float(start.elapsed_time(end))

    return sample


class Rounds:
    """Alternating rounds: each method gets one burst per round; the median of the round medians."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.methods: dict[str, Callable[[], dict[str, float]]] = {}
        self.medians: dict[str, list[float]] = {}

    def deploykit(self, name: str, iteration: Callable[[], object]) -> None:
        """deploykit's own engine: `measure` over the runner's iteration; both figures when there are two."""
        from deploykit.backends.timing import TimingOptions, measure

        def burst() -> dict[str, float]:
            stats = measure(iteration, TimingOptions(warmup_ms=20, iterations=10, duration_s=self.seconds))
            figures = {f"{name}/host": stats.median_ms}
            if stats.gpu is not None:
                figures[f"{name}/gpu"] = stats.gpu.median_ms
            return figures

        self.methods[name] = burst

    def bare(self, name: str, sample: Callable[[], float]) -> None:
        self.methods[name] = lambda: {name: bare_samples(sample, self.seconds)}

    def run(self, rounds: int) -> dict[str, float]:
        for _ in range(rounds):
            for burst in self.methods.values():
                for key, value in burst().items():
                    self.medians.setdefault(key, []).append(value)
        return {key: statistics.median(values) for key, values in self.medians.items()}


def comparison(backend: str, mode: str, figure: str, ours: float | None, bare: float | None, rounds: dict) -> dict:
    ratio = ours / bare if ours and bare else None
    return {"backend": backend, "mode": mode, "figure": figure, "deploykit_ms": ours, "bare_ms": bare, "ratio": ratio,
            "checked": True, "within": ratio is not None and LOW <= ratio <= HIGH, "rounds": rounds}


def variant(backend: str, name: str, median: float, bare: float, why: str) -> dict:
    return {"backend": backend, "variant": name, "median_ms": median, "ratio_to_bare": median / bare, "checked": False,
            "why": why}


def torch_lines(case, precision: str, rounds: int, seconds: float) -> list[dict]:
    """torch-cuda: deploykit's samples against bare loops on the runner's own weights and input."""
    import torch

    from deploykit.backends import get
    from deploykit.backends.base import BuildConfig
    from deploykit.backends.gpu_timing import capture_graph
    from deploykit.backends.torch_backend import from_numpy

    runner = get("torch-cuda").load(case, BuildConfig(precision=precision))
    runner.activate()
    x = from_numpy(case.feeds[case.input_name], "cuda")
    stream = torch.cuda.current_stream()

    def forward():
        with torch.inference_mode():
            return runner._function(x, *runner._weights, **runner._options)

    replay = capture_graph(forward, warmups=3)
    table = Rounds(seconds)
    table.deploykit("plain", runner.iteration(case.feeds))
    table.bare("bare-plain/gpu", event_loop(torch, forward, stream))
    table.bare("bare-plain/host", host_loop(forward, stream.synchronize))
    table.deploykit("cuda-graph", runner.iteration(case.feeds, cuda_graph=True))
    table.bare("bare-cuda-graph/gpu", event_loop(torch, replay, stream))
    table.bare("bare-cuda-graph/host", host_loop(replay, stream.synchronize))
    medians = table.run(rounds)
    runner.deactivate()
    return [comparison("torch-cuda", mode, figure, medians.get(f"{mode}/{figure}"), medians[f"bare-{mode}/{figure}"],
                       {"deploykit": table.medians.get(f"{mode}/{figure}"), "bare": table.medians[f"bare-{mode}/{figure}"]})
            for mode in ("plain", "cuda-graph") for figure in ("gpu", "host")]


def ort_binding(ort, session, feeds: dict, run_options=None):
    """A bare IO binding: inputs on CUDA, outputs allocated by ORT once and reused."""
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
    outputs = [o.name for o in session.get_outputs()]
    for name in outputs:
        binding.bind_output(name, "cuda")
    session.run_with_iobinding(binding, run_options)
    for name, value in zip(outputs, binding.get_outputs()):
        binding.bind_ortvalue_output(name, value)
    for _ in range(3):  # a CUDA-graph session captures on an early run
        session.run_with_iobinding(binding, run_options)
    return binding


def ort_lines(case, precision: str, rounds: int, seconds: float) -> list[dict]:
    """ort-cuda: deploykit's samples against bare IO-binding loops on the same timing session."""
    import onnxruntime as ort
    import torch

    from deploykit.backends import get
    from deploykit.backends.base import BuildConfig
    from deploykit.backends.ort import timing_run_options

    config = BuildConfig(precision=precision, threads=os.cpu_count())  # as `deploykit profile` does
    runner = get("ort-cuda").load(case, config)
    runner.activate()
    table = Rounds(seconds)
    table.deploykit("plain", runner.iteration(case.feeds))
    session, stream = runner._timing_sessions[-1], runner._stream  # the session deploykit times, on its stream
    binding = ort_binding(ort, session, case.feeds)
    no_sync = timing_run_options(synchronize=False)
    plain_options = ort.RunOptions()  # what deploykit passed before: no gpu_graph_id
    table.bare("bare-plain/host", host_loop(lambda: session.run_with_iobinding(binding)))
    table.bare("bare-plain/gpu", event_loop(torch, lambda: session.run_with_iobinding(binding, no_sync), stream))
    with_options = host_loop(lambda: session.run_with_iobinding(binding, plain_options))
    table.bare("variant/run-options", with_options)
    table.bare("variant/synchronize-outputs", host_loop(lambda: session.run_with_iobinding(binding), binding.synchronize_outputs))
    old = host_loop(lambda: session.run_with_iobinding(binding, plain_options), binding.synchronize_outputs)
    table.bare("variant/old-loop", old)
    one_thread = get("ort-cuda").load(case, BuildConfig(precision=precision, threads=1))._load_session()
    one_binding = ort_binding(ort, one_thread, case.feeds)
    table.bare("variant/one-thread", host_loop(lambda: one_thread.run_with_iobinding(one_binding)))
    own_binding = ort_binding(ort, runner.session, case.feeds)
    table.bare("variant/ort-stream", host_loop(lambda: runner.session.run_with_iobinding(own_binding)))
    table.deploykit("cuda-graph", runner.iteration(case.feeds, cuda_graph=True))
    graph_session = runner._load_session.with_provider_options({"enable_cuda_graph": "1"})()
    graph_binding = ort_binding(ort, graph_session, case.feeds)
    table.bare("bare-cuda-graph/host", host_loop(lambda: graph_session.run_with_iobinding(graph_binding)))
    medians = table.run(rounds)
    runner.deactivate()
    lines = [comparison("ort-cuda", mode, figure, medians.get(f"{mode}/{figure}"), medians[f"bare-{mode}/{figure}"],
                        {"deploykit": table.medians.get(f"{mode}/{figure}"), "bare": table.medians[f"bare-{mode}/{figure}"]})
             for mode, figure in (("plain", "gpu"), ("plain", "host"), ("cuda-graph", "host"))]
    bare = medians["bare-plain/host"]
    why = {"run-options": "RunOptions without gpu_graph_id: onnxruntime's wrapper raises and catches a lookup per call",
           "synchronize-outputs": "an extra IOBinding.synchronize_outputs() (cudaDeviceSynchronize) per call",
           "old-loop": "both: deploykit's ORT loop before this fix",
           "one-thread": "a session with intra_op_num_threads=1 (deploykit's default is every core)",
           "ort-stream": "the verdict's session, on ORT's own stream (no user_compute_stream)"}
    lines += [variant("ort-cuda", name, medians[f"variant/{name}"], bare, text) for name, text in why.items()]
    return lines


def backend_lines(name: str, run: Callable, case, args) -> list[dict]:
    """One backend's lines, or one line saying why it was skipped (not available here)."""
    from deploykit.backends import get

    status = get(name).probe()
    if not status.available:
        return [{"backend": name, "skipped": status.reason}]
    return run(case, args.precision, args.rounds, args.seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of every method")
    parser.add_argument("--seconds", type=float, default=0.2, help="seconds of samples per method and round")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "tf32"))
    args = parser.parse_args()
    missing = no_gpu_reason()
    if missing:
        print(f"no GPU: {missing}; nothing timed")
        return 0
    from deploykit.backends.gpu_timing import torch_cuda

    if torch_cuda() is None:
        print("a GPU is present, but torch with CUDA (for CUDA events) is not: cannot time", file=sys.stderr)
        return 2
    from deploykit.onnxio.write import build_case
    from deploykit.profile import matrix_spec

    case = build_case(matrix_spec("decoder", CONFIG))
    lines = backend_lines("torch-cuda", torch_lines, case, args) + backend_lines("ort-cuda", ort_lines, case, args)
    for line in lines:
        print(json.dumps({"config": CONFIG, "precision": args.precision, **line}), flush=True)
    outside = [line for line in lines if line.get("checked") and not line["within"]]
    for line in outside:
        print(f"outside {LOW}-{HIGH}: {line['backend']} {line['mode']} {line['figure']}: ratio {line['ratio']}", file=sys.stderr)
    return 1 if outside else 0


if __name__ == "__main__":
    sys.exit(main())
