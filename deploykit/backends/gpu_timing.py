"""GPU timing after trtexec: each sample is a host latency and, where it can be measured, a GPU compute time.

At batch 1 a ConvTranspose layer takes tens of microseconds on a GPU, and launch overhead is a large
part of that, so one number cannot say whether a runtime is slow on the GPU or on the host.  trtexec
reports both: "GPU Compute Time" (CUDA events recorded on the stream the work runs on, around the
work) and the latency of the whole call.  A sample here is a `Sample(host_ms, gpu_ms)` of one call:

- `host_ms`: `perf_counter_ns` around the call until its result is ready (synchronised);
- `gpu_ms`: the CUDA-event time between a start event recorded on the work's stream before the call
  and an end event recorded after it, or None where no event can bracket the work alone (no torch
  with CUDA to make events, or a runtime that synchronises inside the call).

CUDA events and graphs come from torch (`torch.cuda.Event`, `torch.cuda.CUDAGraph`) when it is
installed with a usable CUDA device.  Everything here is imported lazily, so CPU-only machines never
load torch for timing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Sample:
    """One timed call: host latency, and GPU compute time when events could bracket the work."""

    host_ms: float
    gpu_ms: float | None = None


#: What a runner's `iteration` returns: one call per sample, its latency in ms or a `Sample`.
Timed = Callable[[], float | Sample]


#: Why a GPU backend reports host latency only when torch cannot make CUDA events.
NO_EVENTS = "host latency only: GPU compute time needs torch with CUDA (for CUDA events)"


def torch_cuda():
    """torch when it is installed with a usable CUDA device (for CUDA events and graphs), else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def require_torch_cuda(what: str):
    """torch with CUDA, or a RuntimeError that says what needed it (recorded as `latency not measured`)."""
    torch = torch_cuda()
    if torch is None:
        raise RuntimeError(f"{what} needs torch with CUDA")
    return torch


def event_timed(run: Callable[[], object], stream=None, *, enter_stream: bool = False) -> Callable[[], Sample]:
    """Samples of `run` with CUDA events on `stream` (default: torch's current stream).

    The start event is recorded before the host clock starts, and the end event right after `run`
    returns, so the host span holds one event record and the synchronise, nothing else.  `run` must
    enqueue its work on `stream` and return without waiting for it (else the GPU span would hold the
    host's wait too).  `enter_stream` makes `stream` torch's current stream around `run`, for work
    that goes to the current stream (a replayed torch CUDA graph on a runtime's own stream).
    """
    torch = require_torch_cuda("GPU compute time (CUDA events)")
    stream = stream if stream is not None else torch.cuda.current_stream()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def sample() -> Sample:
        start.record(stream)
        begin = time.perf_counter_ns()
        if enter_stream:
            with torch.cuda.stream(stream):
                run()
        else:
            run()
        end.record(stream)
        end.synchronize()
        host = (time.perf_counter_ns() - begin) / 1e6
        return Sample(host, float(start.elapsed_time(end)))

    return sample


class HostOnly:
    """Samples with host latency only, carrying why there is no GPU figure (shown with the result)."""

    def __init__(self, call: Callable[[], object], gpu_note: str) -> None:
        self._call = call
        self.gpu_note = gpu_note

    def __call__(self) -> Sample:
        begin = time.perf_counter_ns()
        self._call()
        return Sample((time.perf_counter_ns() - begin) / 1e6)


def capture_graph(run: Callable[[], object], stream=None, warmups: int = 1) -> Callable[[], None]:
    """A torch CUDA graph of one `run`, returned as its replay (on the current stream at replay time).

    torch wants warm-up calls on a side stream before a capture (lazy initialisation, cuDNN's
    algorithm choice and workspace must not happen inside it): `warmups` of them run on the capture
    stream first.  `stream` is the capture stream (a runtime's own stream, e.g. TensorRT's); by
    default a fresh side stream.  What `run` allocates during the capture comes from the graph's
    private pool and stays valid for every replay.
    """
    torch = require_torch_cuda("CUDA-graph replay")
    side = stream if stream is not None else torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmups):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    return graph.replay
